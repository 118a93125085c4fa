"""The operators' listener: liveness, readiness with reasons, Prometheus metrics."""

from __future__ import annotations

from collections.abc import Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from proxy.metrics import Metrics


def create_admin_app(
    readiness: Callable[[], list[str]], metrics: Metrics,
    details: Callable[[], dict[str, object]] | None = None,
) -> Starlette:
    """``readiness()`` returns the reasons the worker is not ready (empty: ready);
    ``details()`` adds facts that do not affect readiness (e.g. a refused policy reload)."""

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(request: Request) -> Response:
        reasons = readiness()
        extra = details() if details is not None else {}
        if reasons:
            return JSONResponse({"ready": False, "reasons": reasons, **extra}, status_code=503)
        return JSONResponse({"ready": True, **extra})

    async def metrics_view(request: Request) -> Response:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    return Starlette(routes=[
        Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics_view),
    ])
