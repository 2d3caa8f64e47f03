"""Check the events of the submissions a worker expands together, and attribute each to a
model version.

The checks of single events are event_checks.py's (with well_formed.py's faster path for a
well-formed JSON submission); here the events of a group of batches are attributed to the
version that served them, or that made the prediction a label answers.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from django.db import connection
from django.db.models import Q

from registry.models import Application, ModelVersion, TrafficAllocation

from ..constants import LABEL_LOOKBACK
from ..models import FeedbackEvent, FeedbackKind, IngestBatch
from .event_checks import Candidate, Checked, Window, field_checks, same_answer
from .parsing import RowError, decode_events
from .well_formed import well_formed_candidates

_LABEL = str(FeedbackKind.LABEL)


# --- Attribution to a model version ---


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
        candidates = well_formed_candidates(raw, window, default_app)
        if candidates is not None:
            return Checked(candidates=candidates)
    return field_checks(decode_events(raw, fmt), window, default_app)


def _by_index(item: Candidate | RowError) -> int:
    return item.index
