"""Limits and defaults of feedback ingestion (settings-only values are read from settings)."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings

MAX_EVENTS_PER_REQUEST = 10_000
MAX_ROWS_PER_UPLOAD = 50_000
MAX_REQUEST_BYTES = 5 * 1024 * 1024
MAX_PAYLOAD_BYTES = 4096
MAX_STORED_ERRORS = 1000  # per batch; `rejected` still counts every one
MAX_ATTEMPTS = 5  # a batch that failed this often is marked failed, not retried forever
# A worker expands up to this many stored batches (or this many bytes of them) in one
# transaction: one COPY, one rollup upsert and one status update for the group
GROUP_MAX_BATCHES = 16
GROUP_MAX_BYTES = MAX_REQUEST_BYTES
FUTURE_SKEW = timedelta(minutes=5)  # client clocks run a little fast
LABEL_LOOKBACK = timedelta(days=14)
INSERT_CHUNK_ROWS = 500  # 14 columns x 500 rows stays under SQLite's 32,766 parameters
CSV_COLUMNS = (
    "event_id",
    "occurred_at",
    "application",
    "model_version",
    "role",
    "kind",
    "value",
    "prediction",
    "label",
    "request_id",
    "segment",
    "payload",
)


def retention() -> timedelta:
    return timedelta(days=getattr(settings, "FEEDBACK_RETENTION_DAYS", 30))


def ingest_queue() -> str:
    """Queue of the ingest tasks; tests point their own worker at a private queue."""
    return getattr(settings, "FEEDBACK_INGEST_QUEUE", "ingest")


def claim_timeout() -> timedelta:
    """A claim older than the task time limit belongs to a worker that is gone."""
    return timedelta(seconds=getattr(settings, "CELERY_TASK_TIME_LIMIT", 100) + 5)


def drain_budget_s() -> float:
    """How long one ingest task keeps taking groups before it hands over to a fresh message:
    well inside the task time limit, so a hard kill never cuts a group short, and short
    enough that probe and default tasks sharing a worker (the Procfile's one worker) wait
    seconds, not minutes, behind a busy ingest stream. A hand-over costs one message."""
    return max(1.0, min(5.0, getattr(settings, "CELERY_TASK_TIME_LIMIT", 100) / 4))


def requeue_after() -> timedelta:
    """How long a batch may wait in `pending` before the sweeper sends it again."""
    return timedelta(seconds=getattr(settings, "FEEDBACK_REQUEUE_AFTER_S", 120))
