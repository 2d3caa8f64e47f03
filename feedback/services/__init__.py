"""Every write of the feedback app: one function per use case (STYLE R3).

A package because ingestion alone passes ~400 lines; import from `feedback.services`.
"""

from .ingest import (
    IdempotencyConflict,
    add_to_rollups,
    claim_batch,
    claim_batches,
    drain_open_batches,
    enqueue_batch,
    ingest_feedback_batch,
    schedule_drain,
    submit_batch,
)
from .maintenance import purge_old_events, purge_old_submissions, requeue_stale_batches
from .parsing import EnvelopeError
from .reports import acknowledge_report, file_report, resolve_report, serving_version
from .sources import poll_due_sources, poll_source

__all__ = [
    "EnvelopeError",
    "IdempotencyConflict",
    "acknowledge_report",
    "add_to_rollups",
    "claim_batch",
    "claim_batches",
    "drain_open_batches",
    "enqueue_batch",
    "file_report",
    "ingest_feedback_batch",
    "poll_due_sources",
    "poll_source",
    "purge_old_events",
    "purge_old_submissions",
    "requeue_stale_batches",
    "resolve_report",
    "schedule_drain",
    "serving_version",
    "submit_batch",
]
