"""The reading side in one import: verify for evidence, query and friends for review."""

from __future__ import annotations

from proxy.audit.review import Filters, export_csv, follow, format_table, iter_records, json_lines, query
from proxy.audit.verify import Location, PendingIntent, Problem, VerifyReport, verify
from proxy.errors import AuditIntegrityError

__all__ = [
    "AuditIntegrityError",
    "Filters",
    "Location",
    "PendingIntent",
    "Problem",
    "VerifyReport",
    "export_csv",
    "follow",
    "format_table",
    "iter_records",
    "json_lines",
    "query",
    "verify",
]
