"""Every read of the registry that a page, endpoint or other app needs; N+1-free."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.db.models import (
    Count,
    DateTimeField,
    Exists,
    ExpressionWrapper,
    F,
    IntegerField,
    OuterRef,
    Prefetch,
    Q,
    QuerySet,
    Subquery,
    Value,
)
from django.db.models.functions import Coalesce
from django.utils import timezone

from .exceptions import NotFound
from .models import (
    AliasAssignment,
    Application,
    AuditEvent,
    ConsistencyCheck,
    Deployment,
    ModelAlias,
    ModelVersion,
    RegisteredModel,
    Replica,
    Rollout,
    TrafficAllocation,
)


def in_force_at(at: datetime) -> Q:
    """Allocation rows valid at instant `at`."""
    return Q(valid_from__lte=at) & (Q(valid_to__isnull=True) | Q(valid_to__gt=at))


def current_allocations() -> QuerySet[TrafficAllocation]:
    return TrafficAllocation.objects.filter(valid_to__isnull=True).select_related(
        "model_version__registered_model"
    )


def allocations_at(*, deployment_ids: list[int], at: datetime) -> QuerySet[TrafficAllocation]:
    """The split in force at a past instant, for attribution and history."""
    return TrafficAllocation.objects.filter(in_force_at(at), deployment_id__in=deployment_ids)


def application_list() -> QuerySet[Application]:
    return Application.objects.all()


def registered_model_list() -> QuerySet[RegisteredModel]:
    aliases = ModelAlias.objects.select_related("version").order_by("name")
    return RegisteredModel.objects.prefetch_related(
        Prefetch("aliases", queryset=aliases, to_attr="alias_list")
    )


def model_version_list() -> QuerySet[ModelVersion]:
    return ModelVersion.objects.select_related("registered_model")


def get_model_version(*, model_name: str, version: int) -> ModelVersion:
    """One version by model name and number, or NotFound."""
    mv = model_version_list().filter(registered_model__name=model_name, version=version).first()
    if mv is None:
        raise NotFound(f"no version {version} of model {model_name!r}", field="version")
    return mv


def deployment_list() -> QuerySet[Deployment]:
    return Deployment.objects.select_related("application").prefetch_related(
        Prefetch("allocations", queryset=current_allocations(), to_attr="current_allocations")
    )


def replica_list() -> QuerySet[Replica]:
    return Replica.objects.select_related(
        "deployment__application", "reported_version__registered_model"
    )


def audit_event_list() -> QuerySet[AuditEvent]:
    return AuditEvent.objects.select_related("application")


def alias_list() -> QuerySet[ModelAlias]:
    """Aliases with the version each points at; filter by registered_model."""
    return ModelAlias.objects.select_related("registered_model", "version")


def alias_detail_list() -> QuerySet[ModelAlias]:
    """Aliases with their full assignment history (newest first), two queries in all."""
    history = AliasAssignment.objects.select_related("version", "assigned_by").order_by(
        "-assigned_at", "-id"
    )
    return alias_list().prefetch_related(
        Prefetch("history", queryset=history, to_attr="history_list")
    )


def registered_model_by_name(name: str) -> RegisteredModel | None:
    return RegisteredModel.objects.filter(name=name).first()


def application_by_slug(slug: str) -> Application | None:
    return Application.objects.filter(slug=slug).first()


def model_versions_by_number(
    pairs: list[tuple[str, int]],
) -> dict[tuple[str, int], ModelVersion]:
    """{(model name, version number): version} for the pairs that exist, in one query."""
    wanted = Q(pk__in=[])
    for name, number in set(pairs):
        wanted |= Q(registered_model__name=name, version=number)
    return {
        (mv.registered_model.name, mv.version): mv for mv in model_version_list().filter(wanted)
    }


def active_rollouts() -> QuerySet[Rollout]:
    return Rollout.objects.filter(state__in=Rollout.ACTIVE_STATES).select_related(
        "baseline_version__registered_model", "candidate_version__registered_model"
    )


def alias_version_at(
    *, registered_model: RegisteredModel, name: str, at: datetime | None = None
) -> ModelVersion | None:
    """Which version alias `name` pointed at, at instant `at` (now by default)."""
    at = at or timezone.now()
    row = (
        AliasAssignment.objects.filter(
            alias__registered_model=registered_model, alias__name=name, assigned_at__lte=at
        )
        .filter(Q(replaced_at__isnull=True) | Q(replaced_at__gt=at))
        .select_related("version__registered_model")
        .first()
    )
    return row.version if row else None


# --- Replica consistency ---


@dataclass
class ReplicaCounts:
    """How a deployment's replicas compare with what it should serve.

    expected: desired replicas; reporting: replicas with a heartbeat within the deployment's
    heartbeat_timeout; stale: known replicas without one; mismatched: reporting replicas whose
    artifact sha256 matches none of the deployment's currently allocated versions.
    inconsistent: reporting replicas whose last golden-input probe found them divergent or
    mismatched; last_check_at / last_check_outcome: the deployment's latest probe run.
    """

    expected: int = 0
    reporting: int = 0
    stale: int = 0
    mismatched: int = 0
    inconsistent: int = 0
    last_check_at: datetime | None = None
    last_check_outcome: str = ""

    @property
    def consistent(self) -> int:
        return self.reporting - self.mismatched


def _count_subquery(replicas: QuerySet[Replica]) -> Coalesce:
    counted = replicas.order_by().values("deployment_id").annotate(n=Count("pk")).values("n")
    return Coalesce(Subquery(counted, output_field=IntegerField()), 0)


def replica_consistency_counts(deployment_ids: Iterable[int]) -> dict[int, ReplicaCounts]:
    """Replica counts for each deployment id, in one query whatever the fleet size."""
    ids = list(deployment_ids)
    if not ids:
        return {}
    fresh_after = ExpressionWrapper(
        Value(timezone.now(), output_field=DateTimeField()) - F("deployment__heartbeat_timeout"),
        output_field=DateTimeField(),
    )
    replicas = Replica.objects.filter(deployment_id=OuterRef("pk"))
    fresh = replicas.filter(last_heartbeat_at__gte=fresh_after)
    serving_same_artifact = TrafficAllocation.objects.filter(
        deployment_id=OuterRef("deployment_id"),
        valid_to__isnull=True,
        model_version__sha256=OuterRef("reported_sha256"),
    )
    latest_check = ConsistencyCheck.objects.filter(deployment_id=OuterRef("pk")).order_by(
        "-started_at", "-id"
    )
    rows = (
        Deployment.objects.filter(pk__in=ids)
        .annotate(
            known=_count_subquery(replicas),
            reporting=_count_subquery(fresh),
            mismatched=_count_subquery(fresh.filter(~Exists(serving_same_artifact))),
            inconsistent=_count_subquery(
                fresh.filter(last_probe_verdict__in=["divergent", "mismatched"])
            ),
            last_check_at=Subquery(latest_check.values("started_at")[:1]),
            last_check_outcome=Subquery(latest_check.values("outcome")[:1]),
        )
        .values_list(
            "pk",
            "desired_replicas",
            "known",
            "reporting",
            "mismatched",
            "inconsistent",
            "last_check_at",
            "last_check_outcome",
        )
    )
    return {
        pk: ReplicaCounts(
            expected=desired,
            reporting=reporting,
            stale=known - reporting,
            mismatched=mismatched,
            inconsistent=inconsistent,
            last_check_at=check_at,
            last_check_outcome=outcome or "",
        )
        for pk, desired, known, reporting, mismatched, inconsistent, check_at, outcome in rows
    }
