"""The status endpoint's cache: each application's rendered status, never served stale.

An entry is the JSON body of `GET /api/v1/applications/{slug}/status` with its age_seconds
left out (they are filled in per request from trained_at), its weak ETag, and two guards:

- the application's generation (registry.status_generation) read *before* the body was
  computed: every write that can change the status bumps it after commit, so an entry
  whose generation is no longer current is never served;
- the earliest instant at which the status changes with no write at all: a reporting
  replica's heartbeat outlives its deployment's timeout, a serving version crosses its age
  SLO, the online-accuracy window drops an hourly rollup. Computed from an instant taken
  before the body, so it can only be early, never late.

Writes that go through Model.save()/delete() are covered by the receivers at the end of
this module (admin edits included); bulk and raw-SQL writes call status_generation.bump
themselves (traffic splits, heartbeats, probe verdicts, check pruning, feedback rollups).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import (
    DateTimeField,
    ExpressionWrapper,
    F,
    Min,
    Q,
    Value,
)
from django.db.models.signals import post_save, pre_delete, pre_save
from django.utils import timezone
from rest_framework.renderers import JSONRenderer

from feedback.models import Alert, AlertRule, QualityRollup
from feedback.selectors import ONLINE_WINDOW
from registry import status_generation
from registry.models import (
    Application,
    ConsistencyCheck,
    Deployment,
    ModelVersion,
    RegisteredModel,
    Replica,
    Rollout,
    TrafficAllocation,
)

from . import selectors

log = logging.getLogger(__name__)

# A body is stored with every age_seconds null; the response splits it there.
_AGE_SLOT = b'"age_seconds":null'
Clock = list[tuple[dict[str, Any], int]]


@dataclass(frozen=True)
class Entry:
    """One application's status body, ready to send."""

    application_id: int
    generation: str
    expires_at: float  # epoch seconds; the entry is wrong from this instant on
    etag: str
    parts: tuple[bytes, ...]  # the JSON body cut at each age_seconds slot
    trained_at: tuple[float, ...]  # epoch seconds, one per slot, in body order

    def serves(self, generation: str | None, now: float) -> bool:
        """Whether this entry is still right: built under `generation`, the one its
        application has now (None: unknown), and not past its expiry."""
        return generation is not None and self.generation == generation and now < self.expires_at

    def body(self, now: float | None = None) -> bytes:
        """The JSON body with ages as of `now`, as the selector computes them."""
        now = time.time() if now is None else now
        out = [self.parts[0]]
        for trained, part in zip(self.trained_at, self.parts[1:], strict=True):
            out.append(b'"age_seconds":%d' % max(int(now - trained), 0))
            out.append(part)
        return b"".join(out)


def max_age_s() -> int:
    """Longest life of an entry; 0 turns the cache off (STATUS_CACHE_MAX_AGE_S)."""
    return int(getattr(settings, "STATUS_CACHE_MAX_AGE_S", 300))


_ENTRY_VERSION = 1  # bump when Entry changes: a deploy must not unpickle another shape
_PLAIN_SLUG = re.compile(r"[-\w]{1,100}", re.ASCII)


def _body_key(slug: str) -> str:
    if _PLAIN_SLUG.fullmatch(slug):
        return f"{status_generation.key_prefix()}:app:v{_ENTRY_VERSION}:{slug}"
    # any string can reach the URL: keep keys short, in a space of their own
    digest = hashlib.sha256(slug.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{status_generation.key_prefix()}:app:v{_ENTRY_VERSION}-sha256:{digest}"


def etag_of(payload: dict[str, Any]) -> str:
    """Weak ETag of a payload whose age_seconds are still null: time alone never changes it."""
    canonical = json.dumps(payload, default=str, separators=(",", ":"))
    return 'W/"' + hashlib.sha256(canonical.encode()).hexdigest()[:32] + '"'


def application_entry(
    slug: str, render: Callable[[selectors.ApplicationStatus, Clock], dict[str, Any]]
) -> Entry:
    """The application's entry: from the cache when still right, else built (and stored).

    `render(status, clock)` turns the selector's result into the response payload, leaving
    age_seconds null and recording each version row in `clock`. Raises NotFound.

    The first request for a slug cannot know the application's id, hence its generation,
    before the body is computed: its entry is stored never valid and only tells the next
    request which generation to read first. Entries outlive their validity for that.
    """
    if max_age_s() <= 0:
        return _build(slug, render, generation=None)
    cache = status_generation.store()
    key = _body_key(slug)
    try:
        cached, generation = _read(key, slug)
        if cached is not None and cached.serves(generation, time.time()):
            return cached
    except Exception:  # the store is down: answer from the database, cache nothing
        log.exception("status cache unavailable; answering uncached")
        return _build(slug, render, generation=None)
    entry = _build(slug, render, generation=generation)
    if cached is not None and entry.application_id != cached.application_id:
        # the slug names another application now: its generation was not the one read
        entry = dataclasses.replace(entry, generation="", expires_at=0.0)
    try:
        cache.set(key, entry, timeout=status_generation.GENERATION_TTL_S)
    except Exception:
        log.exception("status cache: could not store %s", slug)
    return entry


def fleet_entries(
    render: Callable[[selectors.ApplicationStatus, Clock], dict[str, Any]],
) -> list[Entry]:
    """Every application's entry, ordered by slug: the same entries as application_entry's,
    read in one round trip; those missing or no longer right are built together (the
    set-based queries of the fleet selector, once) and stored.

    The list of applications is read first, from the database, so an application created or
    deleted shows at once; each entry is checked against its application's generation, read
    in that same round trip (or created) before anything is built from the database.
    """
    apps = selectors.application_slugs()
    if max_age_s() <= 0:
        return _build_fleet(apps, render, {})
    body_keys = {pk: _body_key(slug) for pk, slug in apps}
    generation_keys = {pk: status_generation.generation_key(pk) for pk, _ in apps}
    try:
        found = status_generation.store().get_many([*body_keys.values(), *generation_keys.values()])
        now = time.time()
        ready: dict[int, Entry] = {}
        generations: dict[int, str] = {}
        for pk, _ in apps:
            cached, generation = found.get(body_keys[pk]), found.get(generation_keys[pk])
            if (
                cached is not None
                and cached.application_id == pk
                and cached.serves(generation, now)
            ):
                ready[pk] = cached
            else:
                generations[pk] = status_generation.read_or_create(generation_keys[pk], generation)
    except Exception:  # the store is down: answer from the database, cache nothing
        log.exception("status cache unavailable; answering the fleet uncached")
        return _build_fleet(apps, render, {})
    missing = [(pk, slug) for pk, slug in apps if pk not in ready]
    built = _build_fleet(missing, render, generations)
    if built:
        try:
            status_generation.store().set_many(
                {body_keys[e.application_id]: e for e in built},
                timeout=status_generation.GENERATION_TTL_S,
            )
        except Exception:
            log.exception("status cache: could not store %d fleet entries", len(built))
    ready.update((e.application_id, e) for e in built)
    return [ready[pk] for pk, _ in apps if pk in ready]  # deleted meanwhile: left out


def _build_fleet(
    apps: list[tuple[int, str]],
    render: Callable[[selectors.ApplicationStatus, Clock], dict[str, Any]],
    generations: dict[int, str],
) -> list[Entry]:
    """Entries of these applications, built together; valid only for those with a
    generation read before this call (the others are built never valid)."""
    if not apps:
        return []
    started = timezone.now()  # before any read: every boundary is early, never late
    ids = [pk for pk, _ in apps]
    statuses = selectors.statuses_of(ids)
    stale_at = _first_replica_stale_at([i for i in ids if i in generations], started)
    return [
        _entry_of(s, render, generations.get(s.id), started, stale_at.get(s.id)) for s in statuses
    ]


# slug -> application id, per process: lets one round trip fetch an entry and the
# generation it must match. Only a hint: the entry's own application id decides.
_application_of: dict[str, int] = {}


def _read_keys(key: str, hint: int | None) -> list[str]:
    if hint is None:
        return [key]
    return [key, status_generation.generation_key(hint)]


def prefetch_keys(slug: str) -> list[str]:
    """What a request for `slug` will read first (for status_generation.prefetched)."""
    if max_age_s() <= 0:
        return []
    return _read_keys(_body_key(slug), _application_of.get(slug))


def _read(key: str, slug: str) -> tuple[Entry | None, str | None]:
    """The stored entry for `slug` and its application's current generation."""
    hint = _application_of.get(slug)
    keys = _read_keys(key, hint)
    found = status_generation.get_many(keys)
    cached = found.get(key)
    generation = found.get(keys[-1]) if hint is not None else None
    if cached is None:
        return None, None
    if cached.application_id != hint:
        generation = None
        if len(_application_of) > 100_000:
            _application_of.clear()
        _application_of[slug] = cached.application_id
    key_of_app = status_generation.generation_key(cached.application_id)
    return cached, status_generation.read_or_create(key_of_app, generation)


def _build(
    slug: str,
    render: Callable[[selectors.ApplicationStatus, Clock], dict[str, Any]],
    *,
    generation: str | None,
) -> Entry:
    """Compute the entry; valid only with a generation read before this call."""
    started = timezone.now()  # before any read: every boundary below is early, never late
    status = selectors.application_status(slug)
    stale_at = None
    if generation is not None:  # only a valid entry needs to know when it turns wrong
        stale_at = _first_replica_stale_at([status.id], started).get(status.id)
    return _entry_of(status, render, generation, started, stale_at)


def _entry_of(
    status: selectors.ApplicationStatus,
    render: Callable[[selectors.ApplicationStatus, Clock], dict[str, Any]],
    generation: str | None,
    started: datetime,
    stale_at: datetime | None,
) -> Entry:
    """The entry of a status read after `started` (and after `generation` was read), whose
    first reporting replica goes stale at `stale_at`."""
    clock: Clock = []
    payload = render(status, clock)
    etag = etag_of(payload)
    parts = JSONRenderer().render(payload).split(_AGE_SLOT)
    if len(parts) != len(clock) + 1:  # cannot happen: strings never hold an unescaped quote
        raise RuntimeError("age_seconds slots do not match the serving versions")
    expires_at = 0.0
    if generation is not None:
        expires_at = min(
            started + timedelta(seconds=max_age_s()),
            _changes_by_itself_at(status, started, stale_at),
        ).timestamp()
    return Entry(
        application_id=status.id,
        generation=generation or "",
        expires_at=expires_at,
        etag=etag,
        parts=tuple(parts),
        trained_at=tuple(v.trained_at.timestamp() for _, v in _rows(status, clock)),
    )


def _rows(status: selectors.ApplicationStatus, clock: Clock) -> list[tuple[Any, Any]]:
    versions = status.versions
    if len(versions) != len(clock):
        raise RuntimeError("payload rows do not match the serving versions")
    return list(zip(clock, versions, strict=True))


def _changes_by_itself_at(
    status: selectors.ApplicationStatus, now: datetime, stale_at: datetime | None
) -> datetime:
    """The first instant after `now` at which the status changes without any write
    (`stale_at`: when its first replica reporting at `now` stops counting as reporting)."""
    moments = [_window_moves_at(now)]
    slo = timedelta(seconds=status.max_model_age_s)
    for v in status.versions:
        if not v.slo_breached:
            # age_seconds (whole seconds) > SLO from trained_at + SLO + 1 s on
            moments.append(v.trained_at + slo + timedelta(seconds=1))
    if stale_at is not None:
        moments.append(stale_at)
    return min(moments)


def _window_moves_at(now: datetime) -> datetime:
    """When the online-accuracy window (hourly rollups, hour >= now - window) drops an hour."""
    since = now - ONLINE_WINDOW
    hour = since.replace(minute=0, second=0, microsecond=0)
    first_kept = hour if hour == since else hour + timedelta(hours=1)
    return first_kept + ONLINE_WINDOW


def _first_replica_stale_at(application_ids: list[int], now: datetime) -> dict[int, datetime]:
    """Per application (those with a replica reporting at `now`), when the first such replica
    stops counting as reporting: one query for any number of applications."""
    timeout = F("deployment__heartbeat_timeout")
    fresh_after = ExpressionWrapper(Value(now) - timeout, output_field=DateTimeField())
    stale_at = ExpressionWrapper(F("last_heartbeat_at") + timeout, output_field=DateTimeField())
    rows = (
        Replica.objects.filter(
            deployment__application_id__in=application_ids, last_heartbeat_at__gte=fresh_after
        )
        .values("deployment__application_id")
        .annotate(at=Min(stale_at))
        .order_by()
        .values_list("deployment__application_id", "at")
    )
    return dict(rows)


# --- Invalidation for writes through the ORM (services, admin, factories) ---
#
# pre_save remembers the applications of the row as stored (a row may move to another
# deployment or application), post_save adds those of the row as saved; pre_delete runs
# while the row and its parents still exist. bump() waits for the commit in every case.


def _apps_of_deployment(deployment_ids: set[int]) -> set[int]:
    if not deployment_ids:
        return set()
    return set(
        Deployment.objects.filter(pk__in=deployment_ids).values_list("application_id", flat=True)
    )


def _deployment_row_apps(instance: Any) -> set[int]:
    """Applications of a row that belongs to a deployment (allocation, replica, rollout...)."""
    descriptor = type(instance).deployment
    if descriptor.is_cached(instance) and instance.deployment is not None:
        return {instance.deployment.application_id}
    return _apps_of_deployment({instance.deployment_id})


def _stored_apps(model: type, pk: Any, path: str) -> set[int]:
    return set(model.objects.filter(pk=pk).values_list(path, flat=True)) - {None}


def _serving_apps(versions: Q, rollouts: Q) -> set[int]:
    """Applications whose status names these versions: allocated now or in an active rollout."""
    allocated = TrafficAllocation.objects.filter(versions, valid_to__isnull=True).values_list(
        "deployment__application_id", flat=True
    )
    rolling = Rollout.objects.filter(rollouts, state__in=Rollout.ACTIVE_STATES).values_list(
        "deployment__application_id", flat=True
    )
    return set(allocated) | set(rolling)


def _version_apps(instance: ModelVersion) -> set[int]:
    pk = instance.pk
    return _serving_apps(
        Q(model_version_id=pk), Q(baseline_version_id=pk) | Q(candidate_version_id=pk)
    )


def _model_apps(instance: RegisteredModel) -> set[int]:
    pk = instance.pk
    return _serving_apps(
        Q(model_version__registered_model_id=pk),
        Q(baseline_version__registered_model_id=pk) | Q(candidate_version__registered_model_id=pk),
    )


def _deployment_apps(instance: Deployment) -> set[int]:
    # a firing alert shows its deployment's name, whichever application it belongs to
    alerting = Alert.objects.filter(deployment_id=instance.pk, state=Alert.State.FIRING)
    return {instance.application_id} | set(alerting.values_list("application_id", flat=True))


def _rule_apps(instance: AlertRule) -> set[int]:
    firing = Alert.objects.filter(rule_id=instance.pk, state=Alert.State.FIRING)
    return set(firing.values_list("application_id", flat=True))


@dataclass(frozen=True)
class _Source:
    """A model the status reads, how to find the applications a row of it affects, and
    the foreign key (path from the row) that can move the row to another application."""

    apps: Callable[[Any], set[int]]
    moves_by: str = ""  # field name whose change moves the row
    path: str = ""  # lookup from the row to application_id, for the stored row
    on_create: bool = True  # False: a new row is not shown anywhere yet
    on_delete: bool = True


_SOURCES: dict[type, _Source] = {
    Application: _Source(apps=lambda a: {a.pk}),
    Deployment: _Source(apps=_deployment_apps, moves_by="application", path="application_id"),
    TrafficAllocation: _Source(
        apps=_deployment_row_apps, moves_by="deployment", path="deployment__application_id"
    ),
    Replica: _Source(
        apps=_deployment_row_apps, moves_by="deployment", path="deployment__application_id"
    ),
    Rollout: _Source(
        apps=_deployment_row_apps, moves_by="deployment", path="deployment__application_id"
    ),
    # deletes come from prune_consistency_checks, which bumps for what it removes: a delete
    # receiver would make Django load every pruned row to send it
    ConsistencyCheck: _Source(apps=_deployment_row_apps, on_delete=False),
    ModelVersion: _Source(apps=_version_apps, on_create=False),
    RegisteredModel: _Source(apps=_model_apps, on_create=False),
    Alert: _Source(
        apps=lambda a: {a.application_id} - {None}, moves_by="application", path="application_id"
    ),
    AlertRule: _Source(apps=_rule_apps, on_create=False),
    QualityRollup: _Source(
        apps=lambda r: {r.application_id}, moves_by="application", path="application_id"
    ),
}


def _before_save(sender: type, instance: Any, update_fields: Any = None, **_: Any) -> None:
    source = _SOURCES[sender]
    instance._status_apps_before = set()
    if not source.moves_by or instance._state.adding or instance.pk is None:
        return
    if update_fields is None or source.moves_by in update_fields:
        instance._status_apps_before = _stored_apps(sender, instance.pk, source.path)


def _after_save(sender: type, instance: Any, created: bool = False, **_: Any) -> None:
    source = _SOURCES[sender]
    if created and not source.on_create:
        return
    before = getattr(instance, "_status_apps_before", set())
    status_generation.bump(before | source.apps(instance))


def _before_delete(sender: type, instance: Any, **_: Any) -> None:
    status_generation.bump(_SOURCES[sender].apps(instance))


def connect() -> None:
    """Wire the receivers (DashboardConfig.ready)."""
    for model, source in _SOURCES.items():
        uid = f"status-cache-{model._meta.label_lower}"
        pre_save.connect(_before_save, sender=model, dispatch_uid=f"{uid}-pre", weak=False)
        post_save.connect(_after_save, sender=model, dispatch_uid=f"{uid}-post", weak=False)
        if source.on_delete:
            pre_delete.connect(
                _before_delete, sender=model, dispatch_uid=f"{uid}-delete", weak=False
            )
