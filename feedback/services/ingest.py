"""The ingest path: one durable write per submission, then an idempotent expansion by a worker.

`submit_batch` runs in the web process: envelope checks, ONE insert, wake the worker after
commit. The worker (`drain_open_batches`) claims the open batches a group at a time and, per
group, in one transaction: validates, inserts the events with ON CONFLICT DO NOTHING semantics,
adds only the rows that were new to the hourly rollups, and marks each batch done. A
redelivered or swept message therefore changes nothing twice (STYLE R14); a killed worker's
transaction rolls back and its batches are taken up again.
"""

from __future__ import annotations

import functools
import gc
import hashlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import orjson
import psycopg
from django.core.cache import caches
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone
from psycopg.errors import UniqueViolation
from psycopg.types.json import Jsonb
from psycopg.types.string import BytesBinaryDumper

from registry import status_generation
from registry.exceptions import DomainError
from registry.models import Application
from registry.roles import Actor

from ..constants import (
    GROUP_MAX_BATCHES,
    GROUP_MAX_BYTES,
    INSERT_CHUNK_ROWS,
    MAX_ATTEMPTS,
    MAX_STORED_ERRORS,
    claim_timeout,
    drain_budget_s,
    ingest_queue,
)
from ..models import FeedbackEvent, FeedbackSource, IngestBatch, QualityRollup
from .event_checks import Candidate, Checked
from .parsing import check_envelope
from .validation import check_and_resolve_group

log = logging.getLogger(__name__)
State = IngestBatch.State


class IdempotencyConflict(DomainError):
    code = "idempotency_conflict"


# --- Submission (web) ---


def submit_batch(
    *,
    actor: Actor,
    raw: bytes,
    fmt: str = IngestBatch.Format.JSON,
    source: str = IngestBatch.Source.API,
    idempotency_key: str = "",
    request_id: str = "",
    filename: str = "",
    default_application: Application | None = None,
    feedback_source: FeedbackSource | None = None,
) -> tuple[IngestBatch, bool]:
    """Store a submission durably and enqueue its expansion; return (batch, created).

    Raises parsing.EnvelopeError (400/413) before anything is stored. With an idempotency key
    already used by the same user, returns the first batch and False.
    """
    sha = hashlib.sha256(raw).hexdigest()
    user = actor.user
    if idempotency_key:
        first = _batch_for_key(user, idempotency_key, sha)
        if first is not None:
            return first, False
    check_envelope(raw, fmt)
    batch = IngestBatch(
        source=source,
        format=fmt,
        raw=raw,
        raw_size=len(raw),
        raw_sha256=sha,
        filename=filename[:255],
        default_application=default_application,
        feedback_source=feedback_source,
        created_by=user,
        idempotency_key=idempotency_key,
        request_id=request_id[:128],
        created_at=timezone.now(),
    )
    if not idempotency_key:
        # no unique key can clash: one INSERT, durable when it returns (autocommit), then
        # the enqueue (at once, or at the commit of a caller's transaction)
        _insert_batch(batch)
        transaction.on_commit(enqueue_batch)
        batch.raw = b""
        return batch, True
    try:
        with transaction.atomic():
            batch.save(force_insert=True)
            transaction.on_commit(enqueue_batch)
    except IntegrityError:
        # a concurrent retry with the same key got there first
        first = _batch_for_key(user, idempotency_key, sha)
        if first is None:
            raise
        return first, False
    batch.raw = b""  # the caller never needs the bytes again; let them go
    return batch, True


def _insert_batch(batch: IngestBatch) -> None:
    """INSERT ... RETURNING id: what save(force_insert=True) does, without the ORM's per-call
    query compilation (about 1.5 ms of CPU per request). On PostgreSQL the parameters travel
    bound, not inlined: the body goes as binary bytea instead of a hex literal twice its size
    that both sides would format and parse (2.3 ms of CPU per 200 KB request measured)."""
    fields, sql = _batch_insert()
    values = [f.get_db_prep_save(f.pre_save(batch, add=True), connection) for f in fields]
    with _bound_cursor() as cursor:
        cursor.execute(sql, values)
        batch.pk = cursor.fetchone()[0]
    batch._state.adding = False
    batch._state.db = connection.alias


def _bound_cursor(*, binary: bool = False) -> Any:
    """A cursor that sends parameters bound (server-side) on PostgreSQL, where Django's own
    cursors inline them, and with `binary` receives results in binary form (a bytea arrives
    as its bytes, not as hex text twice its size that both sides format and parse); still
    wrapped by Django, so queries are logged and counted.

    Its statements are prepared once per connection (settings: prepare_threshold 0): planned
    anew, the batch insert copied its 200 KB parameter into the plan, 0.35-0.5 ms of
    PostgreSQL CPU per request (1.4 against 0.9-1.1 ms measured, six interleaved rounds)."""
    if connection.vendor != "postgresql":
        return connection.cursor()
    connection.ensure_connection()
    cursor = _Cursor(connection.connection)
    if binary:
        cursor.format = psycopg.pq.Format.BINARY
    # _prepare_cursor: Django's own wrapping of a driver cursor (debug logging, execute
    # wrappers); private API, so the ingest tests count this insert among the request's queries
    return connection._prepare_cursor(cursor)


class _Cursor(psycopg.Cursor):
    """psycopg's cursor, noting a statement it sends prepared where Django's query log reads
    it (psycopg 3.3 sets `_query` only for statements sent unprepared; the API's query tests
    would otherwise see the batch insert as None)."""

    def _send_query_prepared(self, name: bytes, pgq: Any, *, binary: bool | None = None) -> None:
        self._query = pgq
        super()._send_query_prepared(name, pgq, binary=binary)


@functools.cache
def _batch_insert() -> tuple[list, str]:
    """The fields a batch insert writes, and its SQL: built once (quoting twenty column
    names through Django's connection proxy took 0.07 ms of each request)."""
    fields = [f for f in IngestBatch._meta.concrete_fields if not f.primary_key]
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    marks = ", ".join(["%s"] * len(fields))
    return fields, f"INSERT INTO {_BATCH} ({columns}) VALUES ({marks}) RETURNING id"


def _batch_for_key(user: Any, key: str, sha: str) -> IngestBatch | None:
    first = IngestBatch.objects.without_raw().filter(created_by=user, idempotency_key=key).first()
    if first is not None and first.raw_sha256 != sha:
        raise IdempotencyConflict(
            "this Idempotency-Key was used with a different body", field="Idempotency-Key"
        )
    return first


def enqueue_batch() -> None:
    """Make sure a worker will expand the batch just committed: wake the ingest queue.

    One message serves many batches: each ingest task expands every open batch, a group at a
    time (`drain_open_batches`). So a message is sent only when none is waiting: a flag in the
    shared cache says one is, and the task drops the flag BEFORE it looks for open batches.
    A batch committed before this call is therefore seen either by a task that has not yet
    looked, or by the one this call sends. Best effort: if the broker is down, the sweeper
    sends one later.
    """
    schedule_drain()


def schedule_drain(*, force: bool = False) -> bool:
    """Send an ingest task unless one is already waiting (always with `force`)."""
    from ..tasks import ingest_feedback_batch_task  # tasks import services: import late

    flag = _drain_flag()
    try:
        if not force and not caches["shared"].add(flag, 1, timeout=DRAIN_FLAG_TTL_S):
            return False
    except Exception:  # the shared cache is down: send, a spare message costs one claim
        log.warning("could not read the ingest wake-up flag; sending a message anyway")
    try:
        ingest_feedback_batch_task.apply_async(queue=ingest_queue())
    except Exception:  # the batch is durable; requeue_stale_batches recovers it
        log.exception("could not enqueue an ingest task; the sweeper will retry")
        _drop_drain_flag()
        return False
    return True


# A lost message leaves the flag up for at most this long (then the next batch sends one);
# under a steady stream it also lets a second task join in, so both worker processes expand.
DRAIN_FLAG_TTL_S = 10


def _drain_flag() -> str:
    return f"feedback:ingest-wake:{ingest_queue()}"


def _drop_drain_flag() -> None:
    try:
        caches["shared"].delete(_drain_flag())
    except Exception:
        log.warning("could not drop the ingest wake-up flag", exc_info=True)


# --- Expansion (worker) ---


# Pending, or processing under a claim that is missing or older than the claim timeout
# (parameters: pending, processing, the stale instant); _claimable says the same in the ORM.
_CLAIMABLE = "(state = %s OR (state = %s AND (claimed_at IS NULL OR claimed_at < %s)))"


def _claimable(stale: datetime) -> Any:
    return IngestBatch.objects.open().exclude(state=State.PROCESSING, claimed_at__gte=stale)


def claim_batch(*, batch_id: int, now: datetime | None = None) -> datetime | None:
    """Mark a batch processing unless done or held by a live worker; return the claim time.

    Committed on its own (attempts must count even if the worker is then killed), and
    without waiting for the WAL flush: a lost claim only means the batch is taken up again.
    """
    now = now or timezone.now()
    stale = now - claim_timeout()
    if connection.vendor == "postgresql":
        # one statement, its own transaction: no BEGIN/SET/COMMIT round trips
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {_BATCH} SET state = %s, claimed_at = %s, attempts = attempts + 1 "
                f"FROM (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit "
                f"WHERE id = %s AND {_CLAIMABLE}",
                [State.PROCESSING, now, batch_id, State.PENDING, State.PROCESSING, stale],
            )
            claimed = cursor.rowcount
    else:
        with transaction.atomic():
            claimed = (
                _claimable(stale)
                .filter(pk=batch_id)
                .update(state=State.PROCESSING, claimed_at=now, attempts=F("attempts") + 1)
            )
    return now if claimed == 1 else None  # 0: done already, or another worker holds it


def claim_batches(
    *,
    limit: int = GROUP_MAX_BATCHES,
    max_bytes: int = GROUP_MAX_BYTES,
    now: datetime | None = None,
) -> tuple[list[int], datetime]:
    """Claim the oldest open batches (up to `limit`, and `max_bytes` of submissions, but at
    least one); return their ids and the claim time. Like claim_batch, committed on its own;
    batches another worker holds are skipped, not waited for."""
    now = now or timezone.now()
    stale = now - claim_timeout()
    if connection.vendor != "postgresql":
        open_ids = _claimable(stale).order_by("pk").values_list("pk", "raw_size")[:limit]
        ids, size = [], 0
        for pk, raw_size in open_ids:
            if ids and size + raw_size > max_bytes:
                break
            if claim_batch(batch_id=pk, now=now):
                ids.append(pk)
                size += raw_size
        return ids, now
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {_BATCH} b SET state = %s, claimed_at = %s, attempts = b.attempts + 1 "
            "FROM (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit, "
            "(SELECT id, sum(raw_size) OVER (ORDER BY id) - raw_size AS before FROM "
            f"(SELECT id, raw_size FROM {_BATCH} WHERE {_CLAIMABLE} ORDER BY id LIMIT %s "
            "FOR UPDATE SKIP LOCKED) AS open) AS picked "
            "WHERE b.id = picked.id AND (picked.before = 0 OR picked.before < %s) "
            "RETURNING b.id",
            [State.PROCESSING, now, State.PENDING, State.PROCESSING, stale, limit, max_bytes],
        )
        ids = sorted(row[0] for row in cursor.fetchall())
    return ids, now


def ingest_feedback_batch(*, batch_id: int) -> int:
    """Expand one stored batch into events exactly once; return how many events were new."""
    claimed_at = claim_batch(batch_id=batch_id)
    if claimed_at is None:
        return 0
    return _expand_claimed([batch_id], claimed_at)


def drain_open_batches(*, budget_s: float | None = None) -> int:
    """What an ingest task does: expand every open batch, a group at a time, until none is
    left; return how many events were new. Past `budget_s` it sends a fresh task to go on."""
    _drop_drain_flag()  # first: a batch committed from now on sends its own message
    deadline = time.monotonic() + (drain_budget_s() if budget_s is None else budget_s)
    inserted = 0
    while True:
        ids, claimed_at = claim_batches()
        if not ids:
            return inserted
        inserted += _expand_claimed(ids, claimed_at)
        if time.monotonic() > deadline:
            schedule_drain(force=True)
            return inserted


@contextmanager
def _cycle_collector_paused() -> Iterator[None]:
    """A group's thousands of events are acyclic dicts and dataclasses piling up until the
    COPY; Python's cycle collector walked them again and again as they grew (3-4 ms of CPU
    per 1,000 events measured with groups of 16 batches). Nothing to collect: pause it."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _expand_claimed(ids: list[int], claimed_at: datetime) -> int:
    """Expand claimed batches as one group; if that fails, one by one, so that a batch that
    cannot be expanded costs the others nothing (each failure counts against its own batch)."""
    try:
        with _cycle_collector_paused():
            return _log_done(_expand_group(ids, claimed_at))
    except Exception as exc:
        if len(ids) == 1:
            _give_back(ids[0], claimed_at, exc)
            raise
        log.warning("expanding %d ingest batches together failed; one at a time", len(ids))
    inserted, first_error = 0, None
    for batch_id in ids:
        try:
            inserted += _log_done(_expand_group([batch_id], claimed_at))
        except Exception as exc:
            _give_back(batch_id, claimed_at, exc)
            first_error = first_error or exc
    if first_error is not None:
        raise first_error
    return inserted


def _log_done(done: list[_Done]) -> int:
    """One line per batch, under the request id of its submission (one task expands the
    batches of many requests; grep a request's id to find what became of it)."""
    for d in done:
        log.info(
            "ingest batch %s expanded: %s accepted, %s duplicate, %s rejected",
            d.batch_id, d.accepted, d.duplicate, d.rejected,
            extra={"request_id": d.request_id, "batch_id": d.batch_id},
        )  # fmt: skip
    return sum(d.accepted for d in done)


def _give_back(batch_id: int, claimed_at: datetime, exc: Exception) -> None:
    """After a crash in the body: back to pending for a retry, or failed after MAX_ATTEMPTS."""
    mine = IngestBatch.objects.filter(pk=batch_id, state=State.PROCESSING, claimed_at=claimed_at)
    message = f"{type(exc).__name__}: {exc}"[:2000]
    mine.filter(attempts__gte=MAX_ATTEMPTS).update(
        state=State.FAILED, finished_at=timezone.now(), last_error=message
    )
    mine.update(state=State.PENDING, claimed_at=None, last_error=message)


_BATCH = "feedback_ingestbatch"


def _lock_claims(ids: list[int], claimed_at: datetime) -> list[tuple[int, bytes, str, str, str]]:
    """Lock our claims and read (id, raw, format, default application slug, request id) of
    each, by id.

    A batch is missing when its claim went stale and another worker took over: it owns it.
    """
    if connection.vendor != "postgresql":
        batches = (
            IngestBatch.objects.select_for_update(of=("self",))
            .select_related("default_application")
            .filter(pk__in=ids, state=State.PROCESSING, claimed_at=claimed_at)
            .order_by("pk")
        )
        return [
            (b.pk, bytes(b.raw), b.format, _slug(b.default_application), b.request_id)
            for b in batches
        ]
    with _bound_cursor(binary=True) as cursor:  # the submissions' bytes as they are stored
        # set_config: this transaction commits without waiting for the WAL flush, set in the
        # same round trip as the lock. Safe for the worker's idempotent writes only: if the
        # server crashes before the commit reaches disk, the whole transaction is lost; the
        # batches are then still pending or processing in durable state and are expanded
        # again. The web's batch insert, which a 202 promises is durable, never does this.
        cursor.execute(
            "SELECT set_config('synchronous_commit', 'off', true), b.id, b.raw, b.format, "
            f"coalesce(a.slug, ''), b.request_id FROM {_BATCH} b LEFT JOIN registry_application a "
            "ON a.id = b.default_application_id "
            "WHERE b.id = ANY(%s) AND b.state = %s AND b.claimed_at = %s "
            "ORDER BY b.id FOR UPDATE OF b",
            [ids, State.PROCESSING, claimed_at],
        )
        return [row[1:] for row in cursor.fetchall()]


def _slug(application: Application | None) -> str:
    return application.slug if application else ""


@dataclass
class _Outcome:
    batch_id: int
    request_id: str
    checked: Checked
    fresh: list[Candidate]


@dataclass(frozen=True)
class _Done:
    """What _mark_done writes for one batch."""

    batch_id: int
    request_id: str
    total: int
    accepted: int
    duplicate: int
    rejected: int
    errors: list


@transaction.atomic
def _expand_group(ids: list[int], claimed_at: datetime) -> list[_Done]:
    """Validate every batch of the group, insert the new events with one COPY, add them to
    the rollups with one upsert and mark each batch done with its own counts: one transaction.

    An event_id seen earlier in the group (in its own batch or an earlier one) is a duplicate,
    as is one already stored: the database says which (_insert_events).
    """
    now = timezone.now()
    seen: set[str] = set()
    outcomes: list[_Outcome] = []
    fresh_all: list[Candidate] = []
    batch_ids: list[int] = []
    claims = _lock_claims(ids, claimed_at)
    all_checked = check_and_resolve_group([claim[1:4] for claim in claims], now=now)
    for (batch_id, *_, request_id), checked in zip(claims, all_checked, strict=True):
        event_ids = {c.event_id for c in checked.candidates}
        if len(event_ids) == len(checked.candidates) and seen.isdisjoint(event_ids):
            fresh = list(checked.candidates)  # the usual case, found with set operations
            seen |= event_ids
        else:
            fresh = []
            for c in checked.candidates:
                if c.event_id not in seen:
                    seen.add(c.event_id)
                    fresh.append(c)
        outcomes.append(_Outcome(batch_id, request_id, checked, fresh))
        fresh_all += fresh
        batch_ids += [batch_id] * len(fresh)
    new = _insert_events(fresh_all, batch_ids, received_at=now)
    add_to_rollups(new)
    new_ids = None if len(new) == len(fresh_all) else {c.event_id for c in new}
    done = []
    for o in outcomes:
        accepted = len(o.fresh) if new_ids is None else sum(
            1 for c in o.fresh if c.event_id in new_ids
        )  # fmt: skip
        errors = o.checked.errors
        rejected = len({e.index for e in errors})  # an event may break several rules
        candidates = len(o.checked.candidates)
        done.append(
            _Done(o.batch_id, o.request_id, candidates + rejected, accepted,
                  candidates - accepted, rejected,
                  [e.as_dict() for e in errors[:MAX_STORED_ERRORS]])
        )  # fmt: skip
    _mark_done(done)
    return done


def _mark_done(done: list[_Done]) -> None:
    finished = timezone.now()
    if connection.vendor != "postgresql":
        for d in done:
            IngestBatch.objects.filter(pk=d.batch_id).update(
                state=State.DONE, finished_at=finished, errors=d.errors, last_error="",
                total=d.total, accepted=d.accepted, duplicate=d.duplicate, rejected=d.rejected,
            )  # fmt: skip
        return
    columns = [
        [getattr(d, name) for d in done]
        for name in ("batch_id", "total", "accepted", "duplicate", "rejected", "errors")
    ]
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {_BATCH} b SET state = %s, finished_at = %s, total = v.total, "
            "accepted = v.accepted, duplicate = v.duplicate, rejected = v.rejected, "
            "errors = v.errors::jsonb, last_error = '' FROM unnest(%s::int8[], %s::int4[], "
            "%s::int4[], %s::int4[], %s::int4[], %s::text[]) "
            "AS v(id, total, accepted, duplicate, rejected, errors) WHERE b.id = v.id",
            [State.DONE, finished, *map(list, columns[:5]),
             [orjson.dumps(e).decode() for e in columns[5]]],
        )  # fmt: skip


# --- Set-based SQL (the hot path) ---

_EVENT_COLUMNS = (
    "event_id", "occurred_at", "received_at", "application_id", "model_version_id", "kind",
    "value", "prediction", "label", "correct", "request_id", "segment", "payload", "batch_id",
)  # fmt: skip


_STAGE = "feedback_event_stage_text"


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _adapters() -> tuple[Callable[[Any], Any], Callable[[datetime], Any]]:
    """How this backend stores UUIDs and datetimes (SQLite: hex text, naive UTC text)."""
    if connection.features.has_native_uuid_field:
        uuid_db = lambda u: u  # noqa: E731
    else:
        uuid_db = lambda u: u.replace("-", "")  # noqa: E731
    return uuid_db, connection.ops.adapt_datetimefield_value


def _event_rows(
    candidates: Sequence[Candidate], batch_ids: Sequence[int | None], received_at: datetime
) -> tuple[list[tuple], dict[str, Any]]:
    """DB-ready rows in _EVENT_COLUMNS order, and {str(db key): event_id} to read RETURNING."""
    uuid_db, dt_db = _adapters()
    received = dt_db(received_at)
    rows, keys = [], {}
    for c, batch_id in zip(candidates, batch_ids, strict=True):
        key = uuid_db(c.event_id)
        keys[str(key)] = c.event_id
        rows.append(
            (
                key,
                dt_db(c.occurred_at),
                received,
                c.application_id,
                c.model_version_id,
                c.kind,
                c.value,
                _json(c.prediction),
                _json(c.label),
                c.correct,
                c.request_id,
                c.segment,
                _json(c.payload),
                batch_id,
            )  # fmt: skip
        )
    return rows, keys


_COPY_TYPES = [
    "text", "timestamptz", "timestamptz", "int8", "int8", "text", "float8", "jsonb", "jsonb",
    "bool", "text", "text", "jsonb", "int8",
]  # fmt: skip
_COPY_TYPES_DIRECT = ["bytea", *_COPY_TYPES[1:]]


def _copy_rows(
    copy: Any,
    candidates: Sequence[Candidate],
    event_ids: Sequence[Any],
    batch_ids: Sequence[int | None],
    received_at: datetime,
) -> None:
    """Write candidates as binary COPY rows in _EVENT_COLUMNS order (psycopg's C dumpers)."""
    write = copy.write_row
    for c, event_id, batch_id in zip(candidates, event_ids, batch_ids, strict=True):
        write(
            (
                event_id,
                c.occurred_at,
                received_at,
                c.application_id,
                c.model_version_id,
                c.kind,
                c.value,
                None if c.prediction is None else Jsonb(c.prediction, dumps=orjson.dumps),
                None if c.label is None else Jsonb(c.label, dumps=orjson.dumps),
                c.correct,
                c.request_id,
                c.segment,
                None if c.payload is None else Jsonb(c.payload, dumps=orjson.dumps),
                batch_id,
            )  # fmt: skip
        )


def _copy_into_events(
    cursor: Any,
    candidates: Sequence[Candidate],
    batch_ids: Sequence[int | None],
    received_at: datetime,
) -> bool:
    """COPY straight into the event table inside a savepoint; False (and nothing written)
    when the primary key refused an event_id stored before, or by a concurrent worker once
    that one commits. Fresh events, the usual case, thus cost one COPY and nothing else."""
    table = connection.ops.quote_name(FeedbackEvent._meta.db_table)
    columns = ", ".join(_EVENT_COLUMNS)
    try:
        with transaction.atomic():  # a savepoint: the batch's transaction survives a refusal
            # event_id as 16 raw bytes: binary COPY carries no type, and that is uuid's wire form
            sql = f"COPY {table} ({columns}) FROM STDIN (FORMAT BINARY)"
            driver_cursor = cursor.cursor
            # bytea by the driver's C dumper, not the DB-API Binary wrapper's (a Python call
            # per row) that psycopg registers last for that type
            driver_cursor.adapters.register_dumper(None, BytesBinaryDumper)
            with driver_cursor.copy(sql) as copy:
                copy.set_types(_COPY_TYPES_DIRECT)
                raw_ids = [bytes.fromhex(c.event_id.replace("-", "")) for c in candidates]
                _copy_rows(copy, candidates, raw_ids, batch_ids, received_at)
    except UniqueViolation:
        return False
    return True


def _insert_staged(
    cursor: Any,
    candidates: Sequence[Candidate],
    batch_ids: Sequence[int | None],
    received_at: datetime,
) -> set:
    """COPY into a session temp table, then INSERT ... SELECT ... ON CONFLICT DO NOTHING
    RETURNING: the database says which rows were new."""
    table = connection.ops.quote_name(FeedbackEvent._meta.db_table)
    columns = ", ".join(_EVENT_COLUMNS)
    # event_id staged as text (the canonical form validation produced) and cast once by the
    # server. Created every time: creating it is transactional, so a rolled-back batch takes
    # it away again; emptied at each commit, and by the DELETE inside a test's transaction.
    cursor.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {_STAGE} ON COMMIT DELETE ROWS AS "
        f"SELECT event_id::text AS event_id, {columns.split(', ', 1)[1]} FROM {table} "
        "WITH NO DATA; "
        f"DELETE FROM {_STAGE}"
    )
    with cursor.cursor.copy(f"COPY {_STAGE} ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(_COPY_TYPES)
        _copy_rows(copy, candidates, [c.event_id for c in candidates], batch_ids, received_at)
    select = columns.replace("event_id", "event_id::uuid", 1)
    cursor.execute(
        f"INSERT INTO {table} ({columns}) SELECT {select} FROM {_STAGE} "
        "ON CONFLICT (event_id) DO NOTHING RETURNING event_id::text"
    )
    return {row[0] for row in cursor.fetchall()}


def _insert_events_values(
    cursor: Any,
    candidates: Sequence[Candidate],
    batch_ids: Sequence[int | None],
    received_at: datetime,
) -> set:
    rows, keys = _event_rows(candidates, batch_ids, received_at)
    table = connection.ops.quote_name(FeedbackEvent._meta.db_table)
    columns = ", ".join(_EVENT_COLUMNS)
    row_sql = "(" + ", ".join(["%s"] * len(_EVENT_COLUMNS)) + ")"
    inserted = set()
    for start in range(0, len(rows), INSERT_CHUNK_ROWS):
        chunk = rows[start : start + INSERT_CHUNK_ROWS]
        cursor.execute(
            f"INSERT INTO {table} ({columns}) VALUES {', '.join([row_sql] * len(chunk))} "
            "ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
            [value for row in chunk for value in row],
        )
        inserted.update(keys[str(row[0])] for row in cursor.fetchall())
    return inserted


def _insert_events(
    candidates: Sequence[Candidate], batch_ids: Sequence[int | None], *, received_at: datetime
) -> Sequence[Candidate]:
    """Insert events (each with its own batch), skipping known event_ids; return the ones
    that were new, in order.

    PostgreSQL: one COPY into the table when every event is new (then nothing is looked
    up), else (the primary key refused one) COPY into a session temp table and INSERT ...
    SELECT ... ON CONFLICT DO NOTHING RETURNING. Elsewhere (SQLite): multi-row INSERT ... ON
    CONFLICT DO NOTHING RETURNING in chunks. Either way the database decides which are new.
    """
    if not candidates:
        return candidates
    with connection.cursor() as cursor:
        if connection.vendor != "postgresql":
            inserted = _insert_events_values(cursor, candidates, batch_ids, received_at)
        elif _copy_into_events(cursor, candidates, batch_ids, received_at):
            return candidates
        else:
            inserted = _insert_staged(cursor, candidates, batch_ids, received_at)
    return [c for c in candidates if c.event_id in inserted]


_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


def add_to_rollups(new_events: Sequence[Candidate]) -> int:
    """Add newly inserted events to their hourly buckets with one upsert; return bucket count."""
    buckets: dict[tuple, list[float]] = defaultdict(lambda: [0, 0.0, 0.0, 0, 0])
    for c in new_events:
        at = c.occurred_at
        # the UTC hour as a number: from the date and hour when the time is in UTC, as most
        # are (0.11 against 0.25 ms per 1,000 events for timestamp())
        if at.tzinfo is UTC:
            hour = (at.toordinal() - _EPOCH_ORDINAL) * 24 + at.hour
        else:
            hour = int(at.timestamp()) // 3600
        b = buckets[(c.application_id, c.model_version_id, c.kind, hour)]
        b[0] += 1
        if c.value is not None:
            b[1] += c.value
            b[2] += c.value * c.value
        if c.correct is not None:
            b[3] += c.correct
            b[4] += 1
    if not buckets:
        return 0
    table = connection.ops.quote_name(QualityRollup._meta.db_table)
    upsert = (
        f"INSERT INTO {table} (application_id, model_version_id, kind, hour, count, sum, "
        "sum_sq, correct, labelled) {rows} "
        "ON CONFLICT (application_id, model_version_id, kind, hour) DO UPDATE SET "
        f"count = {table}.count + excluded.count, sum = {table}.sum + excluded.sum, "
        f"sum_sq = {table}.sum_sq + excluded.sum_sq, "
        f"correct = {table}.correct + excluded.correct, "
        f"labelled = {table}.labelled + excluded.labelled"
    )
    # sorted: concurrent workers lock buckets in the same order, so they cannot deadlock
    ordered = sorted(buckets.items())
    if connection.vendor == "postgresql":
        # nine arrays: the same short statement text whatever the number of buckets
        columns: list[list[Any]] = [[] for _ in range(9)]
        for (app_id, mv_id, kind, hour), values in ordered:
            for column, value in zip(
                columns,
                (app_id, mv_id, kind, datetime.fromtimestamp(hour * 3600, tz=UTC), *values),
                strict=True,
            ):
                column.append(value)
        rows = (
            "SELECT * FROM unnest(%s::int8[], %s::int8[], %s::text[], %s::timestamptz[], "
            "%s::int8[], %s::float8[], %s::float8[], %s::int8[], %s::int8[])"
        )
        params: list[Any] = columns
    else:
        _, dt_db = _adapters()
        params = []
        for (app_id, mv_id, kind, hour), (n, s, sq, correct, labelled) in ordered:
            start = datetime.fromtimestamp(hour * 3600, tz=UTC)
            params += (app_id, mv_id, kind, dt_db(start), n, s, sq, correct, labelled)
        rows = "VALUES " + ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s, %s)"] * len(buckets))
    with connection.cursor() as cursor:
        cursor.execute(upsert.replace("{rows}", rows), params)
    # the status endpoint's online accuracy reads the labelled buckets (after commit)
    status_generation.bump({app_id for (app_id, _, _, _), b in ordered if b[4]})
    return len(buckets)
