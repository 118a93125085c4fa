"""The audit trail: durable, HMAC-chained JSON lines that show any later tampering.

Full documentation (layout, rotation, retention, the verify algorithm, what it can and cannot
detect) is in ``docs/audit.md``. Modules:

    chain.py      pure: canonical bytes, HMAC links, open/seal records, per-trail key
    record.py     the caller's record fields; refuses secret-looking keys and Secret values
    layout.py     file names, TRAIL.json, locks
    writer.py     AuditWriter: group-committed, fsynced, one chain per process
    verify.py     verify(): every link, seal and cross-chain anchor
    review.py     iter_records, query, format_table, export_csv, follow (tail -f)
    retention.py  prune(): delete old sealed segments behind a MACed tombstone
    reader.py     the reading side in one import
"""

from __future__ import annotations

from proxy.audit.reader import Filters, VerifyReport, iter_records, query, verify
from proxy.audit.writer import AuditWriter, default_writer_id

__all__ = [
    "AuditWriter",
    "Filters",
    "VerifyReport",
    "default_writer_id",
    "iter_records",
    "query",
    "verify",
]
