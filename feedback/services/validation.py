"""Check and normalise single events, and attribute each to a model version.

An event that fails any check is rejected alone, with (index, field, message); the rest of
its batch is kept. Hand-written rather than a DRF serializer: this runs for every event of
the ingest hot path, and a serializer costs about 100 times more per event. A well-formed
JSON submission takes a faster path first (well_formed.py); these checks are the reference.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec
import orjson
from django.db import connection
from django.db.models import Q

from registry.models import Application, ModelVersion, TrafficAllocation
from registry.numbers import ascii_int

from ..constants import FUTURE_SKEW, LABEL_LOOKBACK, MAX_PAYLOAD_BYTES, retention
from ..models import FeedbackEvent, FeedbackKind, IngestBatch
from .parsing import RowError, decode_events

KINDS = frozenset(FeedbackKind.values)
ROLES = frozenset(TrafficAllocation.Role.values)


class Candidate(msgspec.Struct, gc=False):
    """An event that passed the field checks and awaits its model version.

    A msgspec Struct rather than a dataclass: made once per event on the hot path, in 0.12
    µs against 0.29 for a slotted dataclass, and not tracked by the cycle collector (it
    holds no cycles)."""

    index: int
    event_id: str  # canonical: lowercase, hyphenated (cheaper to hash and compare than UUID)
    occurred_at: datetime
    app_slug: str
    kind: str
    value: float | None
    prediction: Any
    label: Any
    request_id: str
    segment: str
    payload: Any
    version_ref: tuple[str, int] | None
    role: str | None
    application_id: int = 0
    model_version_id: int = 0
    correct: bool | None = None


@dataclass
class Checked:
    candidates: list[Candidate] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)


@dataclass(frozen=True)
class Window:
    """The accepted range of occurred_at, computed once per batch."""

    oldest: datetime
    newest: datetime
    days: int

    @classmethod
    def at(cls, now: datetime) -> Window:
        keep = retention()
        return cls(oldest=now - keep, newest=now + FUTURE_SKEW, days=keep.days)


_LABEL = str(FeedbackKind.LABEL)
_PREDICTION = str(FeedbackKind.PREDICTION)
_KIND_MESSAGE = f"kind must be one of {', '.join(sorted(KINDS))}"
_ROLE_MESSAGE = f"role must be one of {', '.join(sorted(ROLES))}"
_NUMBER = (int, float)


def _string(raw: Any, name: str, errors: list[RowError], i: int, max_len: int) -> str:
    if raw is None:
        return ""
    if type(raw) is not str:
        errors.append(RowError(i, name, f"{name} must be a string"))
        return ""
    if len(raw) > max_len:
        errors.append(RowError(i, name, f"{name} is longer than {max_len} characters"))
    return raw


_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
_is_canonical_uuid = _CANONICAL_UUID.match


def _event_id(raw: Any, i: int, errors: list[RowError]) -> str | None:
    """The UUID in canonical text form, so that spellings of one UUID are one key."""
    if type(raw) is str:
        if _is_canonical_uuid(raw):
            return raw
        try:
            return str(uuid.UUID(raw))
        except ValueError:
            pass
    errors.append(RowError(i, "event_id", "event_id is required and must be a UUID string"))
    return None


def _timestamp(raw: Any, i: int, window: Window, errors: list[RowError]) -> datetime | None:
    if type(raw) is not str:
        errors.append(RowError(i, "occurred_at", "occurred_at is required (ISO 8601 string)"))
        return None
    try:
        at = datetime.fromisoformat(raw)
    except ValueError:
        errors.append(RowError(i, "occurred_at", f"not an ISO 8601 timestamp: {raw[:40]!r}"))
        return None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)  # naive timestamps are taken as UTC
    if at > window.newest:
        errors.append(RowError(i, "occurred_at", "occurred_at is in the future"))
        return None
    if at < window.oldest:
        message = f"occurred_at is older than the {window.days}-day retention"
        errors.append(RowError(i, "occurred_at", message))
        return None
    return at


def parse_version_ref(raw: Any, i: int, errors: list[RowError]) -> tuple[str, int] | None:
    """'ranker:3' or {"model": "ranker", "version": 3}."""
    if raw is None:
        return None
    name, number = None, None
    if isinstance(raw, str) and ":" in raw:
        name, _, num = raw.rpartition(":")
        number = ascii_int(num)
    elif isinstance(raw, dict):
        name, number = raw.get("model"), raw.get("version")
    if not isinstance(name, str) or not name or type(number) is not int or number < 1:
        errors.append(RowError(i, "model_version", 'use "<model>:<version>", e.g. "ranker:3"'))
        return None
    return name, number


def _value(raw: Any, i: int, errors: list[RowError]) -> float | None:
    if raw is None:
        return None
    if type(raw) not in _NUMBER or not math.isfinite(raw):  # bool is not a number here
        errors.append(RowError(i, "value", "value must be a finite number"))
        return None
    return float(raw)


def json_size(value: Any) -> int | None:
    """Bytes of `value` as JSON, or None when it cannot be stored (orjson, which writes the
    jsonb columns, refuses nesting deeper than 255 levels; JSON itself allows more)."""
    try:
        return len(orjson.dumps(value))
    except orjson.JSONEncodeError:
        return None


TOO_DEEP = "is nested too deeply (255 levels at most)"
NESTED = (list, dict)


def _payload(raw: Any, i: int, errors: list[RowError]) -> Any:
    if raw is None:
        return None
    if type(raw) is not dict:
        errors.append(RowError(i, "payload", "payload must be a JSON object"))
        return None
    size = json_size(raw)
    if size is None:
        errors.append(RowError(i, "payload", f"payload {TOO_DEEP}"))
    elif size > MAX_PAYLOAD_BYTES:
        errors.append(RowError(i, "payload", f"payload is larger than {MAX_PAYLOAD_BYTES} bytes"))
    return raw


def check_event(i: int, event: Any, window: Window, default_app: str) -> Candidate | list[RowError]:
    """Field checks of one event; no database access.

    Runs for every event of the hot path, so well-formed values take inline fast paths and
    only unusual ones pay for a helper call.
    """
    if type(event) is not dict:
        return [RowError(i, "__all__", "an event must be a JSON object")]
    get = event.get
    errors: list[RowError] = []
    event_id = get("event_id")
    if type(event_id) is not str or not _is_canonical_uuid(event_id):
        event_id = _event_id(event_id, i, errors)
    occurred_at = _timestamp(get("occurred_at"), i, window, errors)
    app_slug = get("application")
    if type(app_slug) is not str or not app_slug or len(app_slug) > 64:
        app_slug = _string(app_slug, "application", errors, i, 64) or default_app
        if not app_slug and "application" not in event:
            errors.append(RowError(i, "application", "application is required"))
    kind = get("kind")
    if type(kind) is not str or kind not in KINDS:  # a JSON list or object is unhashable
        errors.append(RowError(i, "kind", _KIND_MESSAGE))
    role = get("role")
    if role is not None and (type(role) is not str or role not in ROLES):
        errors.append(RowError(i, "role", _ROLE_MESSAGE))
    request_id = get("request_id")
    if type(request_id) is not str or len(request_id) > 128:
        request_id = _string(request_id, "request_id", errors, i, 128)
    segment = get("segment")
    if type(segment) is not str or len(segment) > 64:
        segment = _string(segment, "segment", errors, i, 64)
    value = get("value")
    if value is not None and (type(value) is not float or not math.isfinite(value)):
        value = _value(value, i, errors)
    payload = get("payload")
    if payload is not None:
        payload = _payload(payload, i, errors)
    version_ref = get("model_version")
    if version_ref is not None:
        version_ref = parse_version_ref(version_ref, i, errors)
    prediction, label = get("prediction"), get("label")
    if type(prediction) in NESTED and json_size(prediction) is None:
        errors.append(RowError(i, "prediction", f"prediction {TOO_DEEP}"))
    if type(label) in NESTED and json_size(label) is None:
        errors.append(RowError(i, "label", f"label {TOO_DEEP}"))
    if kind == _LABEL and label is None:
        errors.append(RowError(i, "label", "a label event needs `label`"))
    elif kind == _PREDICTION and (prediction is None or not request_id):
        message = "a prediction event needs `prediction` and `request_id`"
        errors.append(RowError(i, "prediction", message))
    if errors:
        return errors
    return Candidate(
        i, event_id, occurred_at, app_slug, kind, value, prediction, label,  # type: ignore[arg-type]
        request_id, segment, payload, version_ref, role,
    )  # fmt: skip


# --- Attribution to a model version ---


def same_answer(prediction: Any, label: Any) -> bool:
    """Equality that forgives CSV's strings: 1 == "1", true == "true"."""

    def canon(x: Any) -> str:
        return x if isinstance(x, str) else json.dumps(x)

    return canon(prediction) == canon(label)


class Resolver:
    """Loads, in a handful of queries per group of batches, what attributing their events
    needs."""

    def __init__(self, candidates: list[Candidate]) -> None:
        slugs = {c.app_slug for c in candidates}
        refs = {c.version_ref for c in candidates if c.version_ref}
        self.versions = self._versions(refs)
        self.span: tuple[datetime, datetime] = (datetime.min, datetime.min)
        self._steady: dict[tuple[int, str | None], int | str] = {}
        if connection.vendor == "postgresql":
            self.apps, self.allocations = self._apps_and_allocations(slugs, candidates)
        else:
            self.apps = dict(Application.objects.filter(slug__in=slugs).values_list("slug", "pk"))
            self.allocations = self._allocations(candidates)

    def _apps_and_allocations(
        self, slugs: set[str], candidates: list[Candidate]
    ) -> tuple[dict[str, int], dict[int, list[tuple]]]:
        """Applications by slug and the allocations in force during the batch, in one query."""
        needing = [c.occurred_at for c in candidates if c.version_ref is None]
        by_app: dict[int, list[tuple]] = defaultdict(list)
        apps: dict[str, int] = {}
        with connection.cursor() as cursor:
            if not needing:
                cursor.execute(
                    "SELECT slug, id FROM registry_application WHERE slug = ANY(%s::text[])",
                    [list(slugs)],
                )
                return dict(cursor.fetchall()), by_app
            self.span = (min(needing), max(needing))
            cursor.execute(
                "SELECT a.slug, a.id, d.environment, t.valid_from, t.valid_to, t.role, "
                "t.model_version_id FROM registry_application a "
                "LEFT JOIN registry_deployment d ON d.application_id = a.id "
                "LEFT JOIN registry_trafficallocation t ON t.deployment_id = d.id "
                "AND t.valid_from <= %s AND (t.valid_to IS NULL OR t.valid_to > %s) "
                "WHERE a.slug = ANY(%s::text[])",
                [self.span[1], self.span[0], list(slugs)],
            )
            for slug, app_id, env, valid_from, valid_to, role, mv_id in cursor.fetchall():
                apps[slug] = app_id
                if valid_from is not None:
                    by_app[app_id].append((env, valid_from, valid_to, role, mv_id))
        return apps, by_app

    @staticmethod
    def _versions(refs: set[tuple[str, int]]) -> dict[tuple[str, int], int]:
        if not refs:
            return {}
        wanted = Q(pk__in=[])
        for name, number in refs:
            wanted |= Q(registered_model__name=name, version=number)
        rows = ModelVersion.objects.filter(wanted).values_list(
            "registered_model__name", "version", "pk"
        )
        return {(name, number): pk for name, number, pk in rows}

    def _allocations(self, candidates: list[Candidate]) -> dict[int, list[tuple]]:
        needing = [c for c in candidates if c.version_ref is None]
        if not needing:
            return {}
        start = min(c.occurred_at for c in needing)
        end = max(c.occurred_at for c in needing)
        self.span = (start, end)
        rows = TrafficAllocation.objects.filter(
            deployment__application_id__in=self.apps.values(), valid_from__lte=end
        ).filter(Q(valid_to__isnull=True) | Q(valid_to__gt=start))
        by_app: dict[int, list[tuple]] = defaultdict(list)
        fields = (
            "deployment__application_id",
            "deployment__environment",
            "valid_from",
            "valid_to",
            "role",
            "model_version_id",
        )
        for app_id, env, valid_from, valid_to, role, mv_id in rows.values_list(*fields):
            by_app[app_id].append((env, valid_from, valid_to, role, mv_id))
        return by_app

    def version_at(self, app_id: int, at: datetime, role: str | None) -> int | str:
        """The version serving `app_id` at `at` (in `role`), or why there is not exactly one.

        When no allocation of the application changed during the batch's time span (the usual
        case) the answer is the same for every event: it is computed once.
        """
        key = (app_id, role)
        if key in self._steady:
            return self._steady[key]
        answer = self._version_at(app_id, at, role)
        start, end = self.span
        if all(
            r[1] <= start and (r[2] is None or r[2] > end) for r in self.allocations.get(app_id, ())
        ):
            self._steady[key] = answer
        return answer

    def _version_at(self, app_id: int, at: datetime, role: str | None) -> int | str:
        rows = [
            r
            for r in self.allocations.get(app_id, ())
            if r[1] <= at and (r[2] is None or r[2] > at)
        ]
        production = [r for r in rows if r[0] == "production"]
        rows = production or rows
        if role:
            versions = {r[4] for r in rows if r[3] == role}
        else:
            versions = {r[4] for r in rows if r[3] != TrafficAllocation.Role.SHADOW}
        if len(versions) == 1:
            return versions.pop()
        if not versions:
            arm = f" in role {role}" if role else ""
            return f"no model version served this application{arm} at occurred_at"
        return (
            "several model versions served this application at occurred_at; "
            "send model_version or role"
        )

    def resolve_all(
        self, candidates: Iterable[Candidate], kept: list[Candidate], errors: list[RowError]
    ) -> None:
        """resolve() each candidate, appending it to `kept` or its error to `errors`. The usual
        event (no version named, its application served by one version all through the
        span: an answer in _steady) takes a shortcut without the method calls."""
        apps_get, steady_get, resolve = self.apps.get, self._steady.get, self.resolve
        for c in candidates:
            if c.version_ref is None and not c.model_version_id:
                app_id = apps_get(c.app_slug)
                found = steady_get((app_id, c.role))
                if type(found) is int:
                    c.application_id = app_id
                    c.model_version_id = found
                    kept.append(c)
                    continue
            if (error := resolve(c)) is None:
                kept.append(c)
            else:
                errors.append(error)

    def resolve(self, c: Candidate) -> RowError | None:
        """Fill application_id and model_version_id, or say why not."""
        app_id = self.apps.get(c.app_slug)
        if app_id is None:
            return RowError(c.index, "application", f"unknown application {c.app_slug[:64]!r}")
        c.application_id = app_id
        if c.model_version_id:  # joined to its prediction already
            return None
        if c.version_ref:
            mv_id = self.versions.get(c.version_ref)
            if mv_id is None:
                name, number = c.version_ref
                return RowError(c.index, "model_version", f"unknown model version {name}:{number}")
            c.model_version_id = mv_id
            return None
        found = self.version_at(app_id, c.occurred_at, c.role)
        if isinstance(found, str):
            return RowError(c.index, "model_version", found)
        c.model_version_id = found
        return None


def join_labels(candidates: Iterable[Candidate], apps: dict[str, int]) -> None:
    """Attribute label events to the version that made the matching prediction.

    A label that carries its own prediction is judged at once; otherwise the latest prediction
    with the same request_id within LABEL_LOOKBACK before the label, from this batch or an
    earlier one, supplies both the prediction and the version.
    """
    labels = []
    batch_predictions: dict[tuple[str, str], list[Candidate]] = defaultdict(list)
    for c in candidates:
        if c.kind == FeedbackKind.PREDICTION:
            batch_predictions[(c.app_slug, c.request_id)].append(c)
        elif c.kind == FeedbackKind.LABEL:
            if c.prediction is not None:
                c.correct = same_answer(c.prediction, c.label)
            elif c.request_id:
                labels.append(c)
    if not labels:
        return
    earliest = min(c.occurred_at for c in labels) - LABEL_LOOKBACK
    stored = FeedbackEvent.objects.filter(
        kind=FeedbackKind.PREDICTION,
        request_id__in={c.request_id for c in labels},
        application_id__in=[apps[c.app_slug] for c in labels if c.app_slug in apps],
        occurred_at__gte=earliest,
    ).values_list("application_id", "request_id", "occurred_at", "model_version_id", "prediction")
    known: dict[tuple[int, str], list[tuple[datetime, int, Any]]] = defaultdict(list)
    for app_id, request_id, at, mv_id, prediction in stored:
        known[(app_id, request_id)].append((at, mv_id, prediction))
    for c in labels:
        options = list(known.get((apps.get(c.app_slug, 0), c.request_id), ()))
        options += [
            (p.occurred_at, p.model_version_id, p.prediction)
            for p in batch_predictions.get((c.app_slug, c.request_id), ())
            if p.model_version_id
        ]
        window = [o for o in options if c.occurred_at - LABEL_LOOKBACK <= o[0] <= c.occurred_at]
        if window:
            _, mv_id, prediction = max(window, key=lambda o: o[0])
            c.model_version_id = mv_id
            c.prediction = prediction
            c.correct = same_answer(prediction, c.label)


def check_and_resolve_group(
    submissions: Sequence[tuple[bytes, str, str]], *, now: datetime
) -> list[Checked]:
    """Run every check on stored submissions ((raw, format, default application slug) each)
    that a worker expands together; return, for each, the events to insert and the per-event
    errors by index. One attribution query serves them all, and a label joins a prediction
    from any of them, as it would had they been expanded one by one."""
    window = Window.at(now)
    outs = [_field_checks(raw, fmt, window, default_app) for raw, fmt, default_app in submissions]
    resolver = Resolver([c for out in outs for c in out.candidates])
    waiting: list[tuple[Checked, list[Candidate]]] = []  # labels, resolved last
    for out in outs:
        # labels last: they join predictions resolved here or earlier
        labels = [c for c in out.candidates if c.kind == _LABEL]
        others = [c for c in out.candidates if c.kind != _LABEL] if labels else out.candidates
        out.candidates = []
        resolver.resolve_all(others, out.candidates, out.errors)
        if labels:
            waiting.append((out, labels))
    if waiting:
        resolved = [c for out in outs for c in out.candidates]
        join_labels(resolved + [c for _, labels in waiting for c in labels], resolver.apps)
        for out, labels in waiting:
            resolver.resolve_all(labels, out.candidates, out.errors)
            out.candidates.sort(key=_by_index)
    for out in outs:
        out.errors.sort(key=_by_index)
    return outs


def _field_checks(raw: bytes, fmt: str, window: Window, default_app: str) -> Checked:
    if fmt == IngestBatch.Format.JSON:
        from .well_formed import well_formed_candidates  # it builds on this module

        candidates = well_formed_candidates(raw, window, default_app)
        if candidates is not None:
            return Checked(candidates=candidates)
    return field_checks(decode_events(raw, fmt), window, default_app)


def field_checks(
    events: Iterable[tuple[int, Any, RowError | None]], window: Window, default_app: str
) -> Checked:
    """check_event on every decoded event: the general checks, the reference."""
    out = Checked()
    for i, event, error in events:
        if error is not None:
            out.errors.append(error)
            continue
        result = check_event(i, event, window, default_app)
        if isinstance(result, Candidate):
            out.candidates.append(result)
        else:
            out.errors.extend(result)
    return out


def _by_index(item: Candidate | RowError) -> int:
    return item.index
