"""The operators' listener: liveness, readiness with reasons, Prometheus metrics, and the
read-only audit review page (``GET /audit``)."""

from __future__ import annotations

import re
from collections.abc import Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from proxy.audit.page import CONTENT_SECURITY_POLICY
from proxy.ops.metrics import Metrics
from proxy.ops.review_page import DEFAULT_LIMIT, MAX_LIMIT, AuditReview
from proxy.ops.status import ProxyStatus


def create_admin_app(
    readiness: Callable[[], list[str]], metrics: Metrics,
    details: Callable[[], dict[str, object]] | None = None,
    audit_review: Callable[[], AuditReview | None] | None = None,
    status: ProxyStatus | None = None,
) -> Starlette:
    """``readiness()`` returns the reasons the worker is not ready (empty: ready);
    ``details()`` adds facts that do not affect readiness (e.g. a refused policy reload);
    ``audit_review()`` gives the audit page once the chain key is loaded (None before);
    ``status``, when given, answers /readyz and /metrics for every worker of the ``serve``
    (proxy/ops/status.py) instead of this one alone."""

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(request: Request) -> Response:
        if status is not None:
            code, body = status.readyz()
            return JSONResponse(body, status_code=code)
        reasons = readiness()
        extra = details() if details is not None else {}
        if reasons:
            return JSONResponse({"ready": False, "reasons": reasons, **extra}, status_code=503)
        return JSONResponse({"ready": True, **extra})

    async def metrics_view(request: Request) -> Response:
        text = status.metrics_text() if status is not None else metrics.render()
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    async def audit_view(request: Request) -> Response:
        review = audit_review() if audit_review is not None else None
        if review is None:
            return PlainTextResponse("the audit review is not available yet (starting); retry\n",
                                     status_code=503, headers=_PAGE_HEADERS)
        raw = request.query_params.get("n", str(DEFAULT_LIMIT))
        if not (_COUNT.fullmatch(raw) and 1 <= int(raw) <= MAX_LIMIT):
            return PlainTextResponse(f"n must be a whole number from 1 to {MAX_LIMIT}\n",
                                     status_code=400, headers=_PAGE_HEADERS)
        return HTMLResponse(await review.html(int(raw)), headers=_PAGE_HEADERS_CSP)

    return Starlette(routes=[
        Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics_view),
        Route("/audit", audit_view),
    ])


_PAGE_HEADERS = {
    "cache-control": "no-store", "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer", "x-frame-options": "DENY",
}

_PAGE_HEADERS_CSP = {**_PAGE_HEADERS, "content-security-policy": CONTENT_SECURITY_POLICY}
_COUNT = re.compile(r"[0-9]{1,6}")
