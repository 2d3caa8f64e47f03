"""Reads behind the application, model, rollout, replicas and audit pages.

Each page function answers with a constant number of queries whatever the fleet size
(tested at two sizes in tests/dashboard/test_pages.py); the fleet table lives in selectors.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

from django.db.models import (
    BooleanField,
    Case,
    Count,
    DateTimeField,
    Exists,
    ExpressionWrapper,
    F,
    OuterRef,
    Q,
    QuerySet,
    Sum,
    Value,
    When,
)
from django.utils import timezone

from feedback.analysis import analyse_rollout, step_progress
from feedback.models import FeedbackReport, FeedbackSource, QualityRollup
from feedback.selectors import sources_of
from registry.models import (
    Application,
    AuditEvent,
    Deployment,
    ModelAlias,
    ModelVersion,
    RegisteredModel,
    Replica,
    Rollout,
    TrafficAllocation,
)
from registry.rollout_selectors import rollout_list

from . import charts
from .selectors import ApplicationStatus, _statuses
from .templatetags.formatting import short_sha

WINDOWS = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30),
           "90d": timedelta(days=90)}  # fmt: skip
DEFAULT_WINDOW = "7d"
MARKER_KINDS = ("rollout.", "allocation.", "version.stage_changed", "alias.moved")


def _label(model: str, version: int) -> str:
    return f"{model} v{version}"


def _markers(application_id: int, since: datetime) -> list[charts.Marker]:
    """Registry and rollout events of an application since `since`, oldest first (1 query)."""
    wanted = Q()
    for prefix in MARKER_KINDS:
        wanted |= Q(kind__startswith=prefix)
    rows = (
        AuditEvent.objects.filter(wanted, application_id=application_id, at__gte=since)
        .order_by("at")
        .values_list("at", "kind", "target_repr", "reason")[:200]
    )
    return [
        charts.Marker(at=at, kind=kind, label=f"{target}{' — ' + reason if reason else ''}")
        for at, kind, target, reason in rows
    ]


# --- Application ---


@dataclass(frozen=True)
class ApplicationPage:
    application: Application
    status: ApplicationStatus
    spans: list[charts.AllocationSpan]
    quality: list[charts.QualityPoint]
    markers: list[charts.Marker]
    reports: list[FeedbackReport]
    sources: list[FeedbackSource]
    rollouts: list[Rollout]
    audit: list[AuditEvent]
    since: datetime


def application_page(*, slug: str, window: str = DEFAULT_WINDOW) -> ApplicationPage | None:
    """Everything the application page shows, or None for an unknown slug (14 queries)."""
    application = Application.objects.filter(slug=slug).first()
    if application is None:
        return None
    now = timezone.now()
    since = now - WINDOWS.get(window, WINDOWS[DEFAULT_WINDOW])
    return ApplicationPage(
        application=application,
        status=_statuses(Application.objects.filter(pk=application.pk))[0],
        spans=allocation_spans(application.pk, since=since),
        quality=quality_points(application.pk, since=since),
        markers=_markers(application.pk, since),
        reports=list(
            FeedbackReport.objects.filter(application=application).select_related(
                "model_version__registered_model", "reported_by"
            )[:20]
        ),
        sources=list(sources_of(application)),
        # the joins these rows show, not all of rollout_list()'s: each join costs compile and
        # planning time on every page view
        rollouts=list(
            Rollout.objects.filter(deployment__application=application).select_related(
                "deployment", "baseline_version", "candidate_version"
            )[:20]
        ),
        audit=list(AuditEvent.objects.filter(application=application).select_related("actor")[:25]),
        since=since,
    )


def allocation_spans(application_id: int, *, since: datetime) -> list[charts.AllocationSpan]:
    """Every allocation row of the application in force at some point since `since`."""
    rows = (
        TrafficAllocation.objects.filter(deployment__application_id=application_id)
        .filter(Q(valid_to__isnull=True) | Q(valid_to__gt=since))
        .order_by("valid_from", "id")
        .values_list(
            "deployment__name",
            "model_version__registered_model__name",
            "model_version__version",
            "weight",
            "role",
            "valid_from",
            "valid_to",
        )
    )
    return [
        charts.AllocationSpan(
            deployment=dep,
            version=_label(model, number),
            weight=weight,
            role=role,
            start=max(start, since),
            end=end,
        )
        for dep, model, number, weight, role, start, end in rows
    ]


def _rate(num: int | None, den: int | None) -> float | None:
    return num / den if num is not None and den else None


def quality_points(application_id: int, *, since: datetime) -> list[charts.QualityPoint]:
    """Hourly online accuracy, conversion and bad-recommendation rate per version (1 query)."""
    rows = (
        QualityRollup.objects.filter(application_id=application_id, hour__gte=since)
        .values_list("hour", "model_version__registered_model__name", "model_version__version")
        .annotate(
            impressions=Sum("count", filter=Q(kind="impression")),
            conversions=Sum("count", filter=Q(kind="conversion")),
            bad=Sum("count", filter=Q(kind="bad_recommendation")),
            correct=Sum("correct"),
            labelled=Sum("labelled"),
        )
        .order_by("hour")
    )
    return [
        charts.QualityPoint(
            hour=hour,
            version=_label(model, number),
            accuracy=_rate(correct, labelled),
            conversion_rate=_rate(conversions, impressions),
            bad_rate=_rate(bad, impressions),
        )
        for hour, model, number, impressions, conversions, bad, correct, labelled in rows
    ]


# --- Model ---


@dataclass(frozen=True)
class Consumer:
    """A deployment that a version feeds now, and the aliases naming that version."""

    allocation: TrafficAllocation
    aliases: list[str]


@dataclass(frozen=True)
class ModelPage:
    model: RegisteredModel
    versions: list[ModelVersion]
    aliases: list[ModelAlias]
    consumers: list[Consumer]
    deployed: dict[int, list[TrafficAllocation]]  # version id -> its current allocations
    online: list[charts.OnlinePoint]
    rollouts: list[Rollout]
    metric_names: list[str] = field(default_factory=list)

    @property
    def applications(self) -> list[str]:
        return sorted({c.allocation.deployment.application.slug for c in self.consumers})


MAX_VERSIONS = 200


def model_page(*, name: str, window: str = DEFAULT_WINDOW) -> ModelPage | None:
    """The model page, or None for an unknown name (6 queries)."""
    model = RegisteredModel.objects.filter(name=name).first()
    if model is None:
        return None
    since = timezone.now() - WINDOWS.get(window, WINDOWS[DEFAULT_WINDOW])
    versions = list(
        ModelVersion.objects.filter(registered_model=model)
        .select_related("registered_model")
        .order_by("-version")[:MAX_VERSIONS]
    )
    aliases = list(ModelAlias.objects.filter(registered_model=model).select_related("version"))
    allocations = list(
        TrafficAllocation.objects.filter(
            valid_to__isnull=True, model_version__registered_model=model
        )
        .select_related("deployment__application", "model_version__registered_model")
        .order_by("deployment__application__slug", "deployment__name", "-weight")
    )
    alias_names: dict[int, list[str]] = {}
    for alias in aliases:
        alias_names.setdefault(alias.version_id, []).append(alias.name)
    deployed: dict[int, list[TrafficAllocation]] = {}
    for a in allocations:
        deployed.setdefault(a.model_version_id, []).append(a)
    metric_names = sorted({k for v in versions for k in (v.metrics or {})})[:6]
    return ModelPage(
        model=model,
        versions=versions,
        aliases=aliases,
        consumers=[Consumer(a, alias_names.get(a.model_version_id, [])) for a in allocations],
        deployed=deployed,
        online=online_accuracy_points(
            {v.pk: _label(model.name, v.version) for v in versions}, since=since
        ),
        rollouts=list(
            Rollout.objects.select_related(
                "deployment__application", "baseline_version", "candidate_version"
            )
            .filter(
                Q(baseline_version__registered_model=model)
                | Q(candidate_version__registered_model=model)
            )
            .order_by("-created_at")[:10]
        ),
        metric_names=metric_names,
    )


def online_accuracy_points(labels: dict[int, str], *, since: datetime) -> list[charts.OnlinePoint]:
    """Hourly online accuracy per version over every application it serves (1 query).

    `labels` names each version id to chart. Grouping by the id, and naming it from there,
    spares the query two joins and a sort on text: 720 hours x versions rows for 30 days.
    """
    rows = (
        QualityRollup.objects.filter(
            model_version_id__in=list(labels), hour__gte=since, labelled__gt=0
        )
        .values_list("hour", "model_version_id")
        .annotate(correct=Sum("correct"), labelled=Sum("labelled"))
        .order_by("hour")
    )
    return [
        charts.OnlinePoint(hour=hour, version=labels[version_id], accuracy=correct / labelled)
        for hour, version_id, correct, labelled in rows
    ]


# --- Rollout ---


@dataclass(frozen=True)
class RolloutPage:
    rollout: Rollout
    analysis: dict[str, Any]
    progress: dict[str, Any] | None
    events: list[AuditEvent]
    arms: list[charts.ArmFigure]


def rollout_page(*, pk: int) -> RolloutPage | None:
    """A rollout with its analysis, step progress and audit trail, or None (≤ 6 queries)."""
    rollout = rollout_list().filter(pk=pk).first()
    if rollout is None:
        return None
    analysis = analyse_rollout(rollout)
    progress = None
    if rollout.state == Rollout.State.RUNNING and rollout.steps:
        progress = step_progress(rollout, now=timezone.now())
    events = list(
        AuditEvent.objects.filter(target_type="Rollout", target_id=str(pk))
        .select_related("actor")
        .order_by("at", "id")
    )
    arms = [
        charts.ArmFigure(
            metric=m["metric"],
            arm=arm,
            value=m["arms"][arm]["rate"],
            low=(m["arms"][arm]["ci"] or [None, None])[0],
            high=(m["arms"][arm]["ci"] or [None, None])[1],
            n=m["arms"][arm]["n"],
        )
        for m in analysis["metrics"]
        if m["type"] == "proportion"
        for arm in ("baseline", "candidate")
    ]
    return RolloutPage(rollout, analysis, progress, events, arms)


# --- Replicas, fleet-wide ---


@dataclass(frozen=True)
class DeploymentReplicas:
    deployment: Deployment
    replicas: list[Replica]

    @property
    def stale(self) -> int:
        return sum(r.is_stale for r in self.replicas)

    @property
    def mismatched(self) -> int:
        return sum(r.is_mismatched and not r.is_stale for r in self.replicas)

    @property
    def divergent(self) -> int:
        bad = ("divergent", "mismatched")
        return sum(r.last_probe_verdict in bad and not r.is_stale for r in self.replicas)

    @property
    def consistent(self) -> int:
        return len(self.replicas) - self.stale - self.mismatched

    @property
    def missing(self) -> int:
        return max(self.deployment.desired_replicas - len(self.replicas) + self.stale, 0)

    @cached_property
    def cells(self) -> list[tuple[str, str]]:
        """(state, hover text) per replica for the grid, worked out here rather than per cell
        in the template: at 30 deployments a page, the template's ifs and filters cost more
        than the page's queries."""
        return [(_cell_state(r), _cell_title(r)) for r in self.replicas]


def _cell_state(r: Replica) -> str:
    if r.is_stale:
        return "stale"
    if r.is_mismatched:
        return "mismatched"
    return "divergent" if r.last_probe_verdict == "divergent" else "ok"


def _cell_title(r: Replica) -> str:
    version = str(r.reported_version) if r.reported_version else "unknown version"
    heartbeat = (
        f"{timezone.localtime(r.last_heartbeat_at):%Y-%m-%d %H:%M:%S} UTC"
        if r.last_heartbeat_at
        else "never"
    )
    probe = f" · probe {r.last_probe_verdict}" if r.last_probe_verdict else ""
    sha = short_sha(r.reported_sha256)
    return f"{r.instance_id} · {version} · {sha} · heartbeat {heartbeat}{probe}"


REPLICA_CELL_FIELDS = (
    "deployment_id",
    "instance_id",
    "reported_sha256",
    "last_heartbeat_at",
    "last_probe_verdict",
    "reported_version__version",
    "reported_version__registered_model__name",
)


@dataclass(frozen=True)
class ReplicasPage:
    rows: list[DeploymentReplicas]
    matched: int
    page: int
    pages: int


def replicas_page(*, q: str = "", problems_only: bool = False, page: int = 1,
                  per_page: int = 30) -> ReplicasPage:  # fmt: skip
    """Deployments with a grid of their replicas, problems first (4 queries)."""
    now = timezone.now()
    fresh_after = ExpressionWrapper(
        Value(now, output_field=DateTimeField()) - F("heartbeat_timeout"),
        output_field=DateTimeField(),
    )
    deployments = Deployment.objects.all()
    if q:
        deployments = deployments.filter(Q(application__slug__icontains=q) | Q(name__icontains=q))
    ranked = list(
        deployments.annotate(
            known=Count("replicas"),
            fresh=Count("replicas", filter=Q(replicas__last_heartbeat_at__gte=fresh_after)),
        )
        .annotate(
            trouble=Case(
                When(
                    Q(fresh__lt=F("known")) | Q(fresh__lt=F("desired_replicas")),
                    then=Value(True),
                ),
                default=Value(False),
                output_field=BooleanField(),
            )
        )
        .order_by("-trouble", "application__slug", "name")
        .values_list("pk", "trouble")
    )
    if problems_only:
        ranked = [r for r in ranked if r[1]]
    pages = max(1, -(-len(ranked) // per_page))
    page = min(max(page, 1), pages)
    ids = [pk for pk, _ in ranked[(page - 1) * per_page : page * per_page]]
    # only what the grid shows: model instances with every timestamp parsed cost more than
    # the queries (120 replicas, their versions and models, per page)
    shown = (
        Deployment.objects.select_related("application")
        .only("name", "environment", "desired_replicas", "application__slug")
        .in_bulk(ids)
    )
    allocated = TrafficAllocation.objects.filter(
        deployment_id=OuterRef("deployment_id"),
        valid_to__isnull=True,
        model_version__sha256=OuterRef("reported_sha256"),
        # redundant with the line above, but PostgreSQL runs this as one hashed subplan over
        # every current allocation of the fleet unless told which deployments matter
        deployment_id__in=ids,
    )
    replicas = (
        Replica.objects.filter(deployment_id__in=ids)
        .select_related("reported_version__registered_model")
        .only(*REPLICA_CELL_FIELDS)
        .annotate(
            is_stale=Case(
                When(
                    last_heartbeat_at__gte=ExpressionWrapper(
                        Value(now, output_field=DateTimeField())
                        - F("deployment__heartbeat_timeout"),
                        output_field=DateTimeField(),
                    ),
                    then=Value(False),
                ),
                default=Value(True),
                output_field=BooleanField(),
            ),
            is_mismatched=Case(
                When(Q(reported_sha256="") | Exists(allocated), then=Value(False)),
                default=Value(True),
                output_field=BooleanField(),
            ),
        )
        .order_by("deployment_id", "instance_id")
    )
    grouped: dict[int, list[Replica]] = {}
    for r in replicas:
        grouped.setdefault(r.deployment_id, []).append(r)
    rows = [DeploymentReplicas(shown[i], grouped.get(i, [])) for i in ids if i in shown]
    return ReplicasPage(rows=rows, matched=len(ranked), page=page, pages=pages)


# --- Audit log ---


def audit_events() -> QuerySet[AuditEvent]:
    """Audit events for the log page, newest first, with actor and application."""
    return AuditEvent.objects.select_related("application", "actor").order_by("-at", "-id")


def audit_kinds() -> list[str]:
    return list(AuditEvent.objects.order_by("kind").values_list("kind", flat=True).distinct())
