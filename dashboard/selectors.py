"""Reads that compose registry and feedback data for pages and the status endpoint.

`application_status(slug)` and `fleet_status()` answer "what serves this application right
now, and is it healthy?" with a constant number of SQL queries whatever the fleet size. Each
figure family has its own function below (versions, replicas, rollouts, online accuracy,
alerts), so a new source of truth plugs in at one place.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from django.db.models import Count, Exists, F, Min, OuterRef, Q, QuerySet, Sum, Value
from django.utils import timezone

from feedback.alert_selectors import firing_alerts_for
from feedback.models import QualityRollup
from feedback.selectors import ONLINE_WINDOW
from registry.exceptions import NotFound
from registry.models import ApiToken, Application, Deployment, Rollout, TrafficAllocation
from registry.selectors import (
    ReplicaCounts,
    active_rollouts,
    replica_consistency_counts,
)

AGE_WARN_RATIO = 0.75  # amber once a model has used three quarters of its age SLO

Level = Literal["ok", "warn", "breach", "none"]  # green / amber / red / nothing to judge


# --- Result shapes ---


@dataclass(frozen=True)
class ServingVersion:
    """One model version in a deployment's current traffic split."""

    version_id: int
    model: str
    version: int
    role: str
    weight: int
    sha256: str
    trained_at: datetime
    age_seconds: int
    slo_breached: bool
    age_ratio: float  # age / application SLO
    offline_accuracy: float | None
    online_accuracy: float | None

    @property
    def age_level(self) -> Level:
        return _age_level(self.age_ratio)


@dataclass(frozen=True)
class VersionRef:
    model: str
    version: int


@dataclass(frozen=True)
class RolloutStatus:
    """The running or paused rollout of a deployment."""

    id: int
    state: str
    strategy: str
    step_index: int
    step_count: int
    percent: int | None
    baseline: VersionRef
    candidate: VersionRef
    started_at: datetime | None


@dataclass(frozen=True)
class FiringAlert:
    """An alert that is firing now for an application."""

    id: int
    name: str
    severity: str
    message: str
    deployment: str | None
    since: datetime


@dataclass(frozen=True)
class DeploymentStatus:
    id: int
    name: str
    environment: str
    endpoint_url: str
    versions: list[ServingVersion]
    replicas: ReplicaCounts
    active_rollout: RolloutStatus | None


@dataclass(frozen=True)
class ApplicationStatus:
    """Everything the status endpoint and the fleet table show for one application."""

    id: int
    slug: str
    name: str
    team: str
    criticality: str
    max_model_age_s: int
    deployments: list[DeploymentStatus]
    firing_alerts: list[FiringAlert] = field(default_factory=list)

    @property
    def versions(self) -> list[ServingVersion]:
        return [v for d in self.deployments for v in d.versions]

    @property
    def worst_age_ratio(self) -> float | None:
        """The serving version closest to (or furthest past) the age SLO."""
        return max((v.age_ratio for v in self.versions), default=None)

    @property
    def age_level(self) -> Level:
        ratio = self.worst_age_ratio
        return "none" if ratio is None else _age_level(ratio)

    @property
    def oldest_age_seconds(self) -> int | None:
        return max((v.age_seconds for v in self.versions), default=None)

    @property
    def replicas_expected(self) -> int:
        return sum(d.replicas.expected for d in self.deployments)

    @property
    def replicas_consistent(self) -> int:
        return sum(d.replicas.consistent for d in self.deployments)

    @property
    def replicas_mismatched(self) -> int:
        return sum(d.replicas.mismatched for d in self.deployments)

    @property
    def replicas_stale(self) -> int:
        return sum(d.replicas.stale for d in self.deployments)

    @property
    def replica_level(self) -> Level:
        """Red: a replica serves an unallocated artifact, or none reports; amber: gaps."""
        if not self.deployments:
            return "none"
        if self.replicas_mismatched or (self.replicas_expected and not self.replicas_consistent):
            return "breach"
        if self.replicas_consistent < self.replicas_expected or self.replicas_stale:
            return "warn"
        return "ok"

    @property
    def active_rollouts(self) -> list[tuple[DeploymentStatus, RolloutStatus]]:
        return [(d, d.active_rollout) for d in self.deployments if d.active_rollout]


def _age_level(ratio: float) -> Level:
    if ratio > 1:
        return "breach"
    return "warn" if ratio > AGE_WARN_RATIO else "ok"


# --- Entry points ---


def application_status(slug: str) -> ApplicationStatus:
    """The status of one application, or NotFound."""
    statuses = _statuses(Application.objects.filter(slug=slug))
    if not statuses:
        raise NotFound(f"no application {slug!r}")
    return statuses[0]


def fleet_status() -> list[ApplicationStatus]:
    """The status of every application, ordered by slug."""
    return _statuses(Application.objects.all())


def statuses_of(application_ids: list[int]) -> list[ApplicationStatus]:
    """The status of these applications (those that still exist), ordered by slug."""
    return _statuses(Application.objects.filter(pk__in=application_ids))


def application_slugs() -> list[tuple[int, str]]:
    """(id, slug) of every application, ordered by slug."""
    return list(Application.objects.order_by("slug").values_list("pk", "slug"))


# Plain rows rather than model instances: at fleet scale, building thousands of instances and
# parsing their unused timestamps cost more than every query together.
_APP_COLUMNS = ("id", "slug", "name", "team", "criticality", "max_model_age")
_DEPLOYMENT_COLUMNS = (
    "id",
    "application_id",
    "name",
    "environment",
    "endpoint_url",
    "desired_replicas",
)
_ALLOCATION_COLUMNS = (
    "deployment_id",
    "role",
    "weight",
    "model_version_id",
    "model_version__version",
    "model_version__sha256",
    "model_version__trained_at",
    "model_version__registered_model__name",
    "model_version__metrics__accuracy",
)


def _statuses(applications: QuerySet[Application]) -> list[ApplicationStatus]:
    """Three queries for applications, deployments and allocations, then one per figure family."""
    apps = list(applications.order_by("slug").values_list(*_APP_COLUMNS))
    if not apps:
        return []
    deployments = list(
        Deployment.objects.filter(application_id__in=[a[0] for a in apps])
        .order_by("application_id", "name")
        .values_list(*_DEPLOYMENT_COLUMNS)
    )
    deployment_ids = [d[0] for d in deployments]
    allocations = (
        TrafficAllocation.objects.filter(valid_to__isnull=True, deployment_id__in=deployment_ids)
        .order_by("deployment_id", "-weight", "model_version_id")
        .values_list(*_ALLOCATION_COLUMNS)
    )
    rows_by_deployment: dict[int, list[tuple[Any, ...]]] = {}
    for row in allocations:
        rows_by_deployment.setdefault(row[0], []).append(row)
    app_of = {d[0]: d[1] for d in deployments}
    ctx = _Context(
        now=timezone.now(),
        allocations=rows_by_deployment,
        replicas=replica_counts(deployment_ids),
        rollouts=rollouts_by_deployment(deployment_ids),
        online=online_accuracy(
            {
                (app_of[dep_id], row[3])
                for dep_id, rows in rows_by_deployment.items()
                for row in rows
            }
        ),
        alerts=firing_alerts([a[0] for a in apps]),
    )
    deployments_of: dict[int, list[tuple[Any, ...]]] = {}
    for d in deployments:
        deployments_of.setdefault(d[1], []).append(d)
    return [_application(app, deployments_of.get(app[0], []), ctx) for app in apps]


@dataclass(frozen=True)
class _Context:
    now: datetime
    allocations: dict[int, list[tuple[Any, ...]]]
    replicas: dict[int, ReplicaCounts]
    rollouts: dict[int, RolloutStatus]
    online: dict[tuple[int, int], float]
    alerts: dict[int, list[FiringAlert]]


def _application(
    app: tuple[Any, ...], deployments: list[tuple[Any, ...]], ctx: _Context
) -> ApplicationStatus:
    app_id, slug, name, team, criticality, max_model_age = app
    slo_s = max(int(max_model_age.total_seconds()), 1)
    return ApplicationStatus(
        id=app_id,
        slug=slug,
        name=name,
        team=team,
        criticality=criticality,
        max_model_age_s=slo_s,
        deployments=[
            DeploymentStatus(
                id=dep_id,
                name=dep_name,
                environment=environment,
                endpoint_url=endpoint_url,
                versions=[
                    _version(app_id, row, slo_s, ctx) for row in ctx.allocations.get(dep_id, [])
                ],
                replicas=ctx.replicas.get(dep_id, ReplicaCounts(expected=desired)),
                active_rollout=ctx.rollouts.get(dep_id),
            )
            for dep_id, _, dep_name, environment, endpoint_url, desired in deployments
        ],
        firing_alerts=ctx.alerts.get(app_id, []),
    )


def _version(app_id: int, row: tuple[Any, ...], slo_s: int, ctx: _Context) -> ServingVersion:
    _, role, weight, version_id, number, sha256, trained_at, model, accuracy = row
    age_s = max(int((ctx.now - trained_at).total_seconds()), 0)
    return ServingVersion(
        version_id=version_id,
        model=model,
        version=number,
        role=role,
        weight=weight,
        sha256=sha256,
        trained_at=trained_at,
        age_seconds=age_s,
        slo_breached=age_s > slo_s,
        age_ratio=age_s / slo_s,
        # same rule as ModelVersion.offline_accuracy: a number, or nothing
        offline_accuracy=(
            float(accuracy)
            if isinstance(accuracy, int | float) and not isinstance(accuracy, bool)
            else None
        ),
        online_accuracy=ctx.online.get((app_id, version_id)),
    )


# --- Figure families: one query each (or none), keyed for the assembly above ---


def replica_counts(deployment_ids: list[int]) -> dict[int, ReplicaCounts]:
    """Expected / reporting / stale / mismatched replicas per deployment."""
    return replica_consistency_counts(deployment_ids)


def rollouts_by_deployment(deployment_ids: list[int]) -> dict[int, RolloutStatus]:
    """The active (running or paused) rollout of each deployment that has one."""
    if not deployment_ids:
        return {}
    rollouts = active_rollouts().filter(deployment_id__in=deployment_ids)
    return {r.deployment_id: _rollout(r) for r in rollouts}


def _rollout(r: Rollout) -> RolloutStatus:
    return RolloutStatus(
        id=r.pk,
        state=r.state,
        strategy=r.strategy,
        step_index=r.current_step,
        step_count=len(r.steps or []),
        percent=r.current_percent,
        baseline=VersionRef(r.baseline_version.registered_model.name, r.baseline_version.version),
        candidate=VersionRef(
            r.candidate_version.registered_model.name, r.candidate_version.version
        ),
        started_at=r.started_at,
    )


def online_accuracy(pairs: Iterable[tuple[int, int]]) -> dict[tuple[int, int], float]:
    """Online accuracy (correct / labelled) per (application id, model version id), one query.

    Over the last ONLINE_WINDOW, as feedback.selectors.online_accuracy_by_version computes
    it; a version without labelled feedback has no figure. Filtering by version and hour
    only lets PostgreSQL use the (model_version, hour) index: adding the application ids
    made it AND a bitmap of a million rollup rows (137 ms instead of 15 at fleet scale).
    Buckets without labels add nothing to either sum (`correct` only counts labelled
    events); leaving them out of the sort and aggregate halves the query (14 -> 7 ms).
    """
    wanted = set(pairs)
    if not wanted:
        return {}
    rows = (
        QualityRollup.objects.filter(
            model_version_id__in={v for _, v in wanted},
            hour__gte=timezone.now() - ONLINE_WINDOW,
            labelled__gt=0,
        )
        .values_list("application_id", "model_version_id")
        .annotate(correct=Sum("correct"), labelled=Sum("labelled"))
        .order_by()
    )
    return {
        (app, version): correct / labelled
        for app, version, correct, labelled in rows
        if labelled and (app, version) in wanted
    }


def firing_alerts(application_ids: list[int]) -> dict[int, list[FiringAlert]]:
    """Firing alerts per application id, newest first, in one query."""
    out: dict[int, list[FiringAlert]] = {}
    for a in firing_alerts_for(application_ids):
        out.setdefault(a.application_id, []).append(
            FiringAlert(
                id=a.pk,
                name=a.rule.name,
                severity=a.severity,
                message=a.summary,
                deployment=a.deployment.name if a.deployment else None,
                since=a.started_at,
            )
        )
    return out


# --- Fleet summary (the counters above the fleet table) ---


@dataclass(frozen=True)
class FleetSummary:
    applications: int
    serving_versions: int
    slo_breached: int
    slo_warning: int
    rollouts: int
    replica_problems: int
    replica_critical: int
    firing_alerts: int


def fleet_summary(rows: list[ApplicationStatus]) -> FleetSummary:
    """Counters over already-loaded statuses; no query."""
    return FleetSummary(
        applications=len(rows),
        serving_versions=sum(len(r.versions) for r in rows),
        slo_breached=sum(r.age_level == "breach" for r in rows),
        slo_warning=sum(r.age_level == "warn" for r in rows),
        rollouts=sum(len(r.active_rollouts) for r in rows),
        replica_problems=sum(r.replica_level in ("warn", "breach") for r in rows),
        replica_critical=sum(r.replica_level == "breach" for r in rows),
        firing_alerts=sum(len(r.firing_alerts) for r in rows),
    )


# --- API tokens ---


def api_tokens_of(user: Any) -> QuerySet[ApiToken]:
    """A user's API tokens, live ones first, newest first."""
    return ApiToken.objects.filter(user=user).order_by(
        F("revoked_at").asc(nulls_first=True), "-created_at"
    )


# --- Fleet page: attention first, paginated, filtered ---


@dataclass(frozen=True)
class Attention:
    """Why an application needs a look; `score` orders the fleet table (worst first)."""

    age_ratio: float | None = None
    alerts: int = 0
    replica_problem: bool = False
    paused_rollout: bool = False
    active_rollout: bool = False
    open_reports: int = 0

    @property
    def score(self) -> int:
        age = (
            0
            if self.age_ratio is None
            else (4 if self.age_ratio > 1 else self.age_ratio > AGE_WARN_RATIO)
        )
        return 8 * bool(self.alerts) + 4 * self.replica_problem + int(age) + 2 * self.paused_rollout

    @property
    def needs_attention(self) -> bool:
        return self.score > 0


@dataclass(frozen=True)
class FleetPage:
    """One page of the fleet table plus counters over every application that matched."""

    rows: list[ApplicationStatus]
    attention: dict[int, Attention]
    matched: int
    needing_attention: int
    page: int
    pages: int
    teams: list[str]
    summary: FleetCounters


@dataclass(frozen=True)
class FleetCounters:
    """The tiles above the fleet table, over every application matching the filters."""

    applications: int
    needing_attention: int
    slo_breached: int
    slo_warning: int
    replica_problems: int
    firing_alerts: int
    rollouts: int
    open_reports: int


def fleet_page(
    *,
    q: str = "",
    team: str = "",
    environment: str = "",
    attention_only: bool = False,
    page: int = 1,
    per_page: int = 25,
) -> FleetPage:
    """The fleet table, worst applications first, in a constant number of queries.

    Ranking needs a cheap verdict for every matching application (one grouped query per
    figure family); the full status is then built only for the page shown.
    """
    apps = Application.objects.all()
    if q:
        apps = apps.filter(Q(slug__icontains=q) | Q(name__icontains=q) | Q(team__icontains=q))
    if team:
        apps = apps.filter(team=team)
    if environment:
        apps = apps.filter(
            Exists(
                Deployment.objects.filter(application_id=OuterRef("pk"), environment=environment)
            )
        )
    listed = list(apps.order_by("slug").values_list("id", "max_model_age"))
    filtered = bool(q or team or environment)
    verdicts = _attention({a: age for a, age in listed}, apps.values("pk") if filtered else None)
    ranked = sorted(listed, key=lambda a: -verdicts[a[0]].score)  # stable: slug within a score
    if attention_only:
        ranked = [a for a in ranked if verdicts[a[0]].needs_attention]
    pages = max(1, -(-len(ranked) // per_page))
    page = min(max(page, 1), pages)
    shown = [a[0] for a in ranked[(page - 1) * per_page : page * per_page]]
    statuses = {s.id: s for s in _statuses(Application.objects.filter(pk__in=shown))}
    rows = [statuses[i] for i in shown if i in statuses]
    return FleetPage(
        rows=rows,
        attention={i: verdicts[i] for i in shown},
        matched=len(ranked),
        needing_attention=sum(verdicts[a[0]].needs_attention for a in listed),
        page=page,
        pages=pages,
        teams=list(Application.objects.order_by("team").values_list("team", flat=True).distinct()),
        summary=_counters(verdicts),
    )


def _attention(slo_of: dict[int, Any], app_ids: QuerySet[Any] | None) -> dict[int, Attention]:
    """Age, alerts, replicas, paused rollouts and open reports per application: 5 queries.

    `app_ids` is the matching applications as a subquery (500 literal ids cost more to
    compile and plan than the database takes to answer), or None for the whole fleet, which
    spares each query a join to the application table.
    """
    from feedback.models import Alert, FeedbackReport
    from registry.models import Replica

    def of(field: str) -> Q:
        return Q() if app_ids is None else Q(**{f"{field}__in": app_ids})

    now = timezone.now()
    oldest = dict(
        TrafficAllocation.objects.filter(of("deployment__application_id"), valid_to__isnull=True)
        .values_list("deployment__application_id")
        .annotate(oldest=Min("model_version__trained_at"))
        .order_by()
    )
    alerts = dict(
        Alert.objects.filter(of("application_id"), state=Alert.State.FIRING)
        .values_list("application_id")
        .annotate(n=Count("pk"))
        .order_by()
    )
    reports = dict(
        FeedbackReport.objects.filter(of("application_id"))
        .exclude(state=FeedbackReport.State.RESOLVED)
        .values_list("application_id")
        .annotate(n=Count("pk"))
        .order_by()
    )
    rollouts = dict(
        Rollout.objects.filter(of("deployment__application_id"), state__in=Rollout.ACTIVE_STATES)
        .order_by("state")  # "paused" sorts after "running": a paused one wins per application
        .values_list("deployment__application_id", "state")
    )
    fresh = Q(replicas__last_heartbeat_at__gte=Value(now) - F("heartbeat_timeout"))
    allocated = TrafficAllocation.objects.filter(
        deployment_id=OuterRef("deployment_id"),
        valid_to__isnull=True,
        model_version__sha256=OuterRef("reported_sha256"),
    )
    off_artifact = (
        Replica.objects.filter(deployment_id=OuterRef("pk"))
        .filter(last_heartbeat_at__gte=Value(now) - F("deployment__heartbeat_timeout"))
        .exclude(Exists(allocated))
    )
    replica_bad = set(
        Deployment.objects.filter(of("application_id"))
        .annotate(
            known=Count("replicas"),
            reporting=Count("replicas", filter=fresh),
            off=Exists(off_artifact),
        )
        .filter(Q(off=True) | Q(reporting__lt=F("known")) | Q(reporting__lt=F("desired_replicas")))
        .values_list("application_id", flat=True)
    )
    out = {}
    for app_id, slo in slo_of.items():
        first = oldest.get(app_id)
        ratio = None
        if first is not None:
            ratio = (now - first).total_seconds() / max(slo.total_seconds(), 1)
        out[app_id] = Attention(
            age_ratio=ratio,
            alerts=alerts.get(app_id, 0),
            replica_problem=app_id in replica_bad,
            paused_rollout=rollouts.get(app_id) == Rollout.State.PAUSED,
            active_rollout=app_id in rollouts,
            open_reports=reports.get(app_id, 0),
        )
    return out


def _counters(verdicts: dict[int, Attention]) -> FleetCounters:
    ratios = [v.age_ratio for v in verdicts.values() if v.age_ratio is not None]
    return FleetCounters(
        applications=len(verdicts),
        needing_attention=sum(v.needs_attention for v in verdicts.values()),
        slo_breached=sum(r > 1 for r in ratios),
        slo_warning=sum(AGE_WARN_RATIO < r <= 1 for r in ratios),
        replica_problems=sum(v.replica_problem for v in verdicts.values()),
        firing_alerts=sum(v.alerts for v in verdicts.values()),
        rollouts=sum(v.active_rollout for v in verdicts.values()),
        open_reports=sum(v.open_reports for v in verdicts.values()),
    )
