"""Periodic upkeep of ingestion: re-send stale batches; past retention, purge raw events and
the bytes of finished submissions."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.db.models.functions import Length
from django.utils import timezone

from ..constants import MAX_ATTEMPTS, claim_timeout, requeue_after, retention
from ..models import FeedbackEvent, IngestBatch
from .ingest import schedule_drain

log = logging.getLogger(__name__)
State = IngestBatch.State


def requeue_stale_batches(
    *, now: datetime | None = None, pending_for: timedelta | None = None, limit: int = 500
) -> list[int]:
    """Wake the ingest queue for every batch whose message may be lost; fail those out of
    attempts; return the ids of the batches waiting.

    The broker is not the source of truth: a batch still pending in the database after
    `pending_for` (or processing under a claim older than the task time limit) makes the
    sweeper send an ingest task, whatever the wake-up flag says (the lost message may have
    left it up). One task expands every open batch; a duplicate message is harmless, since
    claiming and inserting are idempotent.
    """
    now = now or timezone.now()
    stale = IngestBatch.objects.stale(
        now=now,
        pending_for=requeue_after() if pending_for is None else pending_for,
        claim_timeout=claim_timeout(),
    )
    exhausted = stale.filter(attempts__gte=MAX_ATTEMPTS).update(state=State.FAILED, finished_at=now)
    if exhausted:
        log.warning("marked %d ingest batches failed after %d attempts", exhausted, MAX_ATTEMPTS)
    ids = list(stale.order_by("created_at").values_list("pk", flat=True)[:limit])
    if ids:
        schedule_drain(force=True)
    return ids


def purge_old_events(*, now: datetime | None = None, chunk: int = 50_000) -> int:
    """Delete raw events older than the retention window; rollups stay. Returns rows deleted."""
    cutoff = (now or timezone.now()) - retention()
    deleted = 0
    while True:
        ids = list(
            FeedbackEvent.objects.older_than(cutoff).order_by().values_list("pk", flat=True)[:chunk]
        )
        if not ids:
            return deleted
        deleted += FeedbackEvent.objects.filter(pk__in=ids)._raw_delete(using="default")


def purge_old_submissions(*, now: datetime | None = None, chunk: int = 1_000) -> int:
    """Drop the bytes of finished batches (done or failed) created before the retention
    window; return how many were emptied. The batch row stays, with its counts, errors,
    size and checksum (an Idempotency-Key retry still compares against it): only the
    submission as received goes, which nothing reads once it is expanded. Open batches keep
    theirs, whatever their age."""
    cutoff = (now or timezone.now()) - retention()
    finished = [State.DONE, State.FAILED]
    emptied = 0
    while True:
        # LENGTH(raw) is read from the TOAST pointer: finding the rows detoasts nothing
        ids = list(
            IngestBatch.objects.filter(state__in=finished, created_at__lt=cutoff)
            .alias(stored=Length("raw"))
            .filter(stored__gt=0)
            .order_by()
            .values_list("pk", flat=True)[:chunk]
        )
        if not ids:
            return emptied
        emptied += IngestBatch.objects.filter(pk__in=ids).update(raw=b"")
