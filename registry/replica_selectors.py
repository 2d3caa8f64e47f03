"""Reads for replica consistency: heartbeats, golden sets, probe checks; N+1-free.

Kept apart from registry/selectors.py (shared by several features) so that it can grow
without touching the fleet reads; fold both into a selectors package when either passes
~400 lines (STYLE R1).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import DEFAULT_DB_ALIAS
from django.db.models import (
    BooleanField,
    Case,
    DateTimeField,
    Exists,
    ExpressionWrapper,
    F,
    OuterRef,
    Prefetch,
    Q,
    QuerySet,
    Value,
    When,
)
from django.utils import timezone

from .models import (
    ConsistencyCheck,
    Deployment,
    GoldenSet,
    ModelVersion,
    RegisteredModel,
    Replica,
    ReplicaProbeResult,
    TrafficAllocation,
)
from .numbers import ascii_int

# The two reads of every replica heartbeat, as raw SQL: compiling the ORM queries cost
# 0.6-0.9 ms of CPU each, most of a heartbeat's reads (RawQuerySet still converts the values
# with the model's fields). The tables' names are fixed; only values are parameters.
_DEPLOYMENT_BY_ID = "SELECT d.* FROM registry_deployment d WHERE d.id = %s"
_DEPLOYMENT_BY_NAME = (
    "SELECT d.* FROM registry_deployment d "
    "JOIN registry_application a ON a.id = d.application_id WHERE a.slug = %s AND d.name = %s"
)
_ALLOCATED_VERSIONS = (
    "SELECT v.*, m.name AS registered_model_name FROM registry_modelversion v "
    "JOIN registry_registeredmodel m ON m.id = v.registered_model_id "
    "WHERE v.id IN (SELECT t.model_version_id FROM registry_trafficallocation t "
    "WHERE t.deployment_id = %s AND t.valid_to IS NULL) ORDER BY v.version DESC, v.id"
)


def deployment_by_ref(ref: str | int) -> Deployment | None:
    """A deployment by id (42 or "42") or by "application-slug/deployment-name"."""
    text = str(ref).strip()
    if text.isdigit():
        pk = ascii_int(text)
        return None if pk is None else _first(Deployment.objects.raw(_DEPLOYMENT_BY_ID, [pk]))
    slug, sep, name = text.partition("/")
    if not sep or not slug or not name:
        return None
    return _first(Deployment.objects.raw(_DEPLOYMENT_BY_NAME, [slug, name]))


def _first(rows: Any) -> Any:
    return next(iter(rows), None)


def version_by_number(*, model_name: str, version: int) -> ModelVersion | None:
    return (
        ModelVersion.objects.select_related("registered_model")
        .filter(registered_model__name=model_name, version=version)
        .first()
    )


def allocated_versions(deployment: Deployment) -> list[ModelVersion]:
    """The versions allocated to `deployment` now, the highest version first, each with its
    registered model's name (the rest of that model is read if asked for): what a heartbeat
    is checked against, and usually what it reports."""
    versions = list(ModelVersion.objects.raw(_ALLOCATED_VERSIONS, [deployment.pk]))
    for v in versions:
        v.registered_model = RegisteredModel.from_db(
            DEFAULT_DB_ALIAS, ["id", "name"], [v.registered_model_id, v.registered_model_name]
        )
    return versions


def version_by_sha256(*, deployment: Deployment, sha256: str) -> ModelVersion | None:
    """The version with this artifact, preferring one allocated to `deployment` now."""
    allocated = TrafficAllocation.objects.filter(
        deployment=deployment, valid_to__isnull=True, model_version_id=OuterRef("pk")
    )
    return (
        ModelVersion.objects.select_related("registered_model")
        .filter(sha256=sha256.lower())
        .annotate(allocated=Exists(allocated))
        .order_by("-allocated", "-version")
        .first()
    )


def _fresh_after(now: datetime) -> ExpressionWrapper:
    """Heartbeats at or after this instant are fresh, per the replica's deployment timeout."""
    return ExpressionWrapper(
        Value(now, output_field=DateTimeField()) - F("deployment__heartbeat_timeout"),
        output_field=DateTimeField(),
    )


def _serves_allocated_artifact() -> Exists:
    return Exists(
        TrafficAllocation.objects.filter(
            deployment_id=OuterRef("deployment_id"),
            valid_to__isnull=True,
            model_version__sha256=OuterRef("reported_sha256"),
        )
    )


def replica_rows(*, deployment_id: int, now: datetime | None = None) -> QuerySet[Replica]:
    """A deployment's replicas with `is_stale` and `is_mismatched`, in one query.

    Stale: no heartbeat within the deployment's heartbeat_timeout. Mismatched: it reported an
    artifact sha256 that none of the deployment's current allocations names.
    """
    now = now or timezone.now()
    return (
        Replica.objects.filter(deployment_id=deployment_id)
        .select_related("deployment", "reported_version__registered_model")
        .annotate(
            is_stale=Case(
                When(last_heartbeat_at__gte=_fresh_after(now), then=Value(False)),
                default=Value(True),
                output_field=BooleanField(),
            ),
            is_mismatched=Case(
                When(Q(reported_sha256="") | _serves_allocated_artifact(), then=Value(False)),
                default=Value(True),
                output_field=BooleanField(),
            ),
        )
        .order_by("instance_id")
    )


def live_replicas(*, deployment_id: int, now: datetime | None = None) -> list[Replica]:
    """Replicas with a fresh heartbeat: the ones a probe should reach."""
    return [r for r in replica_rows(deployment_id=deployment_id, now=now) if not r.is_stale]


def current_allocations_of(deployment_id: int) -> list[TrafficAllocation]:
    return list(
        TrafficAllocation.objects.filter(deployment_id=deployment_id, valid_to__isnull=True)
        .select_related("model_version__registered_model")
        .order_by("-weight", "model_version_id")
    )


def golden_set_list() -> QuerySet[GoldenSet]:
    return GoldenSet.objects.select_related("registered_model")


def active_golden_sets(registered_model_ids: list[int]) -> list[GoldenSet]:
    return list(
        golden_set_list()
        .filter(registered_model_id__in=registered_model_ids, active=True)
        .order_by("registered_model_id", "name")
    )


def consistency_check_list() -> QuerySet[ConsistencyCheck]:
    """Checks with their per-replica results (two queries for any number of checks)."""
    results = ReplicaProbeResult.objects.select_related(
        "replica", "reported_version__registered_model"
    ).order_by("replica__instance_id")
    return ConsistencyCheck.objects.select_related("deployment__application").prefetch_related(
        Prefetch("results", queryset=results, to_attr="result_list")
    )


def latest_check(deployment_id: int) -> ConsistencyCheck | None:
    return consistency_check_list().filter(deployment_id=deployment_id).first()


@dataclass
class ReplicaPage:
    """Everything the replica page of one deployment shows (five queries in all).

    Each replica carries `latest_result`: its ReplicaProbeResult in the latest check, if any.
    """

    deployment: Deployment
    allocations: list[TrafficAllocation]
    replicas: list[Replica]
    latest_check: ConsistencyCheck | None

    @property
    def expected_sha256(self) -> list[str]:
        return sorted({a.model_version.sha256 for a in self.allocations})

    @property
    def stale(self) -> int:
        return sum(1 for r in self.replicas if r.is_stale)

    @property
    def mismatched(self) -> int:
        return sum(1 for r in self.replicas if r.is_mismatched and not r.is_stale)

    @property
    def inconsistent(self) -> int:
        return sum(
            1
            for r in self.replicas
            if not r.is_stale and r.last_probe_verdict in ReplicaProbeResult.BAD_VERDICTS
        )


def replica_page(*, deployment_id: int, now: datetime | None = None) -> ReplicaPage | None:
    """The replica page of a deployment, or None when it does not exist."""
    deployment = Deployment.objects.select_related("application").filter(pk=deployment_id).first()
    if deployment is None:
        return None
    check = latest_check(deployment_id)
    results = {r.replica_id: r for r in check.result_list} if check else {}
    replicas = list(replica_rows(deployment_id=deployment_id, now=now))
    for replica in replicas:
        replica.latest_result = results.get(replica.pk)  # type: ignore[attr-defined]
    return ReplicaPage(
        deployment=deployment,
        allocations=current_allocations_of(deployment_id),
        replicas=replicas,
        latest_check=check,
    )
