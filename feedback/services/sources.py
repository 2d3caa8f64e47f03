"""Pull sources: beat polls each FeedbackSource on its own schedule into ordinary batches.

An HTTP JSON source answers `GET <url>?cursor=<c>` with `{"events": [...], "next_cursor": "..."}`
(or a bare list of events, when the cursor becomes the latest occurred_at seen). A CSV source
is re-read whole and only rows newer than the cursor are taken. Errors back off exponentially.
"""

from __future__ import annotations

import csv
import io
import logging
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from registry.exceptions import DomainError
from registry.roles import Actor

from ..constants import MAX_REQUEST_BYTES
from ..models import FeedbackSource, IngestBatch
from .ingest import submit_batch

log = logging.getLogger(__name__)
FETCH_TIMEOUT_S = 10
MAX_BACKOFF = timedelta(hours=6)
LEASE = timedelta(minutes=5)  # a poll in progress holds the source this long at most


class SourceError(Exception):
    """The source could not be read or did not speak the protocol."""


def _fetch(source: FeedbackSource) -> bytes:
    url = source.url
    if source.kind == FeedbackSource.Kind.HTTP_JSON and source.cursor:
        sep = "&" if urllib.parse.urlsplit(url).query else "?"
        url = f"{url}{sep}{urllib.parse.urlencode({'cursor': source.cursor})}"
    headers = {"Accept": "application/json, text/csv", **(source.headers or {})}
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 (admin-set http(s) URL)
    try:
        with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT_S) as response:  # noqa: S310
            body = response.read(MAX_REQUEST_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise SourceError(f"HTTP {exc.code} from {source.url}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise SourceError(f"cannot reach {source.url}: {exc}") from exc
    if len(body) > MAX_REQUEST_BYTES:
        raise SourceError(f"the answer is larger than {MAX_REQUEST_BYTES} bytes")
    return body


def _latest(events: list[Any], cursor: str) -> str:
    stamps = [e.get("occurred_at") for e in events if isinstance(e, dict)]
    stamps = [s for s in stamps if isinstance(s, str)] + ([cursor] if cursor else [])
    return max(stamps, default="")


def _from_json(source: FeedbackSource, body: bytes) -> tuple[bytes | None, str, str]:
    """(events as JSON or None, format, next cursor)."""
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise SourceError(f"the answer is not JSON: {exc}") from exc
    if isinstance(answer, dict) and isinstance(answer.get("events"), list):
        events, cursor = answer["events"], answer.get("next_cursor") or source.cursor
    elif isinstance(answer, list):
        events = answer
        cursor = _latest(events, source.cursor)
    else:
        raise SourceError('expected {"events": [...], "next_cursor": ...} or a list of events')
    return (orjson.dumps(events) if events else None), IngestBatch.Format.JSON, str(cursor)


def _parse_time(raw: str) -> datetime | None:
    try:
        return datetime.fromisoformat(raw)
    except (TypeError, ValueError):
        return None


def _from_csv(source: FeedbackSource, body: bytes) -> tuple[bytes | None, str, str]:
    """Rows newer than the cursor (by occurred_at), as CSV with the same header."""
    try:
        reader = csv.reader(io.StringIO(body.decode("utf-8-sig")))
        header = next(reader)
    except (UnicodeDecodeError, StopIteration, csv.Error) as exc:
        raise SourceError(f"not a CSV file with a header: {exc}") from exc
    if "occurred_at" not in header:
        raise SourceError("the CSV has no occurred_at column")
    col = header.index("occurred_at")
    since = _parse_time(source.cursor) if source.cursor else None
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    newest, kept = since, 0
    for row in reader:
        at = _parse_time(row[col]) if len(row) > col else None
        if at is not None and at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        if since is not None and at is not None and at <= since:
            continue
        writer.writerow(row)
        kept += 1
        if at is not None and (newest is None or at > newest):
            newest = at
    cursor = newest.isoformat() if newest else source.cursor
    return (out.getvalue().encode() if kept else None), IngestBatch.Format.CSV, cursor


def _backoff(source: FeedbackSource) -> timedelta:
    return min(source.interval * (2 ** min(source.consecutive_failures, 16)), MAX_BACKOFF)


def poll_source(*, source_id: int, now: datetime | None = None) -> IngestBatch | None:
    """Fetch new events of one source into a batch; advance its cursor or back off."""
    now = now or timezone.now()
    source = FeedbackSource.objects.select_related("application").get(pk=source_id)
    try:
        body = _fetch(source)
        parse = _from_json if source.kind == FeedbackSource.Kind.HTTP_JSON else _from_csv
        raw, fmt, cursor = parse(source, body)
        with transaction.atomic():
            batch = None
            if raw is not None:
                batch, _ = submit_batch(
                    actor=Actor.system(f"source {source}"), raw=raw, fmt=fmt,
                    source=IngestBatch.Source.PULL, default_application=source.application,
                    feedback_source=source,
                )  # fmt: skip
            FeedbackSource.objects.filter(pk=source.pk).update(
                cursor=cursor[:255], consecutive_failures=0, last_polled_at=now,
                last_success_at=now, next_poll_at=now + source.interval,
            )  # fmt: skip
        return batch
    except (SourceError, DomainError) as exc:
        source.consecutive_failures += 1
        FeedbackSource.objects.filter(pk=source.pk).update(
            consecutive_failures=source.consecutive_failures, last_polled_at=now,
            last_error_at=now, last_error=str(exc)[:2000], next_poll_at=now + _backoff(source),
        )  # fmt: skip
        log.warning("feedback source %s failed: %s", source, exc)
        return None


def poll_due_sources(*, now: datetime | None = None, limit: int = 50) -> int:
    """Poll every enabled source whose time has come; return how many were polled."""
    now = now or timezone.now()
    due = (
        FeedbackSource.objects.filter(enabled=True)
        .filter(Q(next_poll_at__isnull=True) | Q(next_poll_at__lte=now))
        .order_by("next_poll_at")
        .values_list("pk", "next_poll_at")[:limit]
    )
    polled = 0
    for pk, next_poll_at in due:
        # take a lease first: a second beat tick or worker skips a source being polled
        if not FeedbackSource.objects.filter(pk=pk, next_poll_at=next_poll_at).update(
            next_poll_at=now + LEASE
        ):
            continue
        poll_source(source_id=pk, now=now)
        polled += 1
    return polled
