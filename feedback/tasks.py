"""Thin Celery tasks: look up, call a service, set the retry policy (STYLE R13)."""

from __future__ import annotations

import logging

from celery import shared_task
from django.db import OperationalError

from . import services

log = logging.getLogger(__name__)


@shared_task(autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5)
def ingest_feedback_batch_task(batch_id: int | None = None) -> int:
    """Expand every open batch into events and rollups, a group at a time (idempotent; routed
    to `ingest`). `batch_id` is accepted from messages of earlier versions; that batch is
    open, so it is among those expanded."""
    return services.drain_open_batches()


@shared_task
def requeue_stale_batches_task() -> int:
    """Beat: re-send batches whose message was lost or whose worker died."""
    return len(services.requeue_stale_batches())


@shared_task
def purge_old_feedback_events_task() -> int:
    """Beat: drop raw events past FEEDBACK_RETENTION_DAYS, and the bytes of the submissions
    finished before then; rollups and batch records stay. Returns the events dropped."""
    emptied = services.purge_old_submissions()
    if emptied:
        log.info("emptied %d finished ingest batches past retention", emptied)
    return services.purge_old_events()


from . import alert_tasks  # noqa: E402, F401  rollout automation and alert tasks, for autodiscovery


@shared_task
def poll_due_feedback_sources_task() -> int:
    """Beat: poll every pull source whose schedule (or back-off) has come round."""
    return services.poll_due_sources()
