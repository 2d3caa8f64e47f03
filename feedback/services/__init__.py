"""Every write of the feedback app: one function per use case (STYLE R3).

A package because ingestion alone passes ~400 lines; import from `feedback.services`.
"""

from .ingest import (
    IdempotencyConflict,
    add_to_rollups,
    claim_batch,
    enqueue_batch,
    ingest_feedback_batch,
    insert_events,
    submit_batch,
)
from .maintenance import purge_old_events, requeue_stale_batches
from .parsing import EnvelopeError

__all__ = [
    "EnvelopeError",
    "IdempotencyConflict",
    "add_to_rollups",
    "claim_batch",
    "enqueue_batch",
    "ingest_feedback_batch",
    "insert_events",
    "purge_old_events",
    "requeue_stale_batches",
    "submit_batch",
]
