"""Evaluate alert rules against what serves now: model age, rates from rollups, replicas.

Each rule yields one Observation per target (an application's live version, a candidate
arm, a deployment) with a verdict: breach → the alert fires (or stays firing with fresh
evidence), ok → it resolves, not_enough_data → nothing changes. A firing alert whose target
no longer serves is resolved. Relative rules also need a significant difference (two-sided
two-proportion z-test, p < 0.05), so an alert does not flap on noise.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db.models import Q, Sum
from django.utils import timezone

from registry.models import Deployment, Replica, TrafficAllocation
from registry.services.rollouts import GUARDRAIL_METRICS

from . import statistics as st
from .analysis import PROPORTIONS, ArmTotals
from .models import Alert, AlertRule, QualityRollup
from .services.alerts import EXTERNAL_RULES, ensure_builtin_rules, raise_alert, resolve_alert

M, C = AlertRule.Metric, AlertRule.Comparison
SIGNIFICANCE = 0.05


@dataclass
class Observation:
    """One rule's verdict on one target."""

    target_key: str
    verdict: str  # "breach" | "ok" | "not_enough_data"
    summary: str
    value: float | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    deployment: Deployment | None = None
    allocation: TrafficAllocation | None = None


@dataclass
class Context:
    """What every rule reads, loaded once per evaluation."""

    now: datetime
    live: list[TrafficAllocation]


def load_context(now: datetime) -> Context:
    live = list(
        TrafficAllocation.objects.filter(valid_to__isnull=True)
        .filter(Q(weight__gt=0))
        .select_related("deployment__application", "model_version__registered_model")
        .order_by("deployment_id", "-weight")
    )
    return Context(now=now, live=live)


def _in_scope(rule: AlertRule, rows: Iterable[TrafficAllocation]) -> list[TrafficAllocation]:
    return [r for r in rows if rule.application_id in (None, r.deployment.application_id)]


def _by_app_version(rows: Iterable[TrafficAllocation]) -> dict[tuple[int, int], TrafficAllocation]:
    out: dict[tuple[int, int], TrafficAllocation] = {}
    for r in rows:
        out.setdefault((r.deployment.application_id, r.model_version_id), r)
    return out


def rollup_totals(
    keys: Iterable[tuple[int, int]], *, since: datetime, until: datetime
) -> dict[tuple[int, int], ArmTotals]:
    """Totals per (application id, version id) over [since, until), in one query."""
    keys = list(keys)
    out: dict[tuple[int, int], ArmTotals] = defaultdict(ArmTotals)
    if not keys:
        return out
    match = Q()
    for app_id, version_id in keys:
        match |= Q(application_id=app_id, model_version_id=version_id)
    rows = (
        QualityRollup.objects.filter(match, hour__gte=since, hour__lt=until)
        .values_list("application_id", "model_version_id", "kind")
        .annotate(Sum("count"), Sum("sum"), Sum("sum_sq"), Sum("correct"), Sum("labelled"))
        .order_by()
    )
    for app_id, version_id, kind, count, total, total_sq, correct, labelled in rows:
        out[(app_id, version_id)].add(kind, count, total or 0.0, total_sq or 0.0, correct, labelled)
    return out


def rate(totals: ArmTotals, metric: str) -> tuple[int, int]:
    num, den = PROPORTIONS[metric]
    n = getattr(totals, den)
    return min(getattr(totals, num), n), n


# --- Observers, one per kind of rule ---


def observe_model_age(rule: AlertRule, ctx: Context) -> list[Observation]:
    out = []
    for (app_id, version_id), row in _by_app_version(_in_scope(rule, ctx.live)).items():
        app, version = row.deployment.application, row.model_version
        age = (ctx.now - version.trained_at).total_seconds()
        ratio = age / max(app.max_model_age.total_seconds(), 1)
        breach = ratio > rule.threshold
        out.append(
            Observation(
                target_key=f"app:{app_id}/version:{version_id}",
                verdict="breach" if breach else "ok",
                summary=f"{app.slug}: {version} is {age / 3600:.1f} h old "
                f"(SLO {app.max_model_age.total_seconds() / 3600:.1f} h)",
                value=ratio,
                evidence={
                    "trained_at": version.trained_at.isoformat(),
                    "age_s": int(age),
                    "slo_s": int(app.max_model_age.total_seconds()),
                    "age_over_slo": round(ratio, 4),
                },
                allocation=row,
            )
        )
    return out


def observe_absolute_rate(rule: AlertRule, ctx: Context) -> list[Observation]:
    targets = _by_app_version(_in_scope(rule, ctx.live))
    totals = rollup_totals(targets, since=ctx.now - rule.window, until=ctx.now)
    higher_is_better = GUARDRAIL_METRICS[rule.metric]
    out = []
    for key, row in targets.items():
        x, n = rate(totals[key], rule.metric)
        value = x / n if n else None
        key_str = f"app:{key[0]}/version:{key[1]}"
        if n < rule.min_sample or value is None:
            out.append(Observation(key_str, "not_enough_data", f"{n} observations", value))
            continue
        breach = value < rule.threshold if higher_is_better else value > rule.threshold
        summary = (
            f"{row.deployment.application.slug}: {rule.metric} of {row.model_version} is "
            f"{value:.2%} ({'below' if higher_is_better else 'above'} {rule.threshold:.2%})"
        )
        evidence = {"rate": value, "successes": x, "n": n, "threshold": rule.threshold}
        out.append(
            Observation(
                key_str, "breach" if breach else "ok", summary, value, evidence, allocation=row
            )
        )
    return out


def compare(
    rule: AlertRule,
    *,
    key: str,
    row: TrafficAllocation,
    cur: tuple[int, int],
    ref: tuple[int, int],
    ref_label: str,
    extra: dict[str, Any],
) -> Observation:
    """Judge a relative change of a rate against a reference (baseline version or control)."""
    (x, n), (xr, nr) = cur, ref
    if min(n, nr) < rule.min_sample:
        return Observation(key, "not_enough_data", f"{n} vs {nr} observations")
    p_cur, p_ref = x / n, xr / nr
    higher_is_better = GUARDRAIL_METRICS[rule.metric]
    worse_by = (p_ref - p_cur) if higher_is_better else (p_cur - p_ref)
    relative = worse_by / p_ref if p_ref else (float("inf") if worse_by > 0 else 0.0)
    test = st.two_proportion_ztest(x, n, xr, nr)
    p_value = test.p_value if test else None
    breach = relative > rule.threshold and p_value is not None and p_value < SIGNIFICANCE
    word = "dropped" if higher_is_better else "rose"
    shown = f"{relative:.1%}" if relative != float("inf") else "from zero"
    summary = (
        f"{row.deployment.application.slug}: {rule.metric} of {row.model_version} "
        f"{word if relative > 0 else 'changed'} {shown} vs {ref_label} "
        f"({p_cur:.2%} vs {p_ref:.2%}, p={p_value if p_value is None else f'{p_value:.2g}'})"
    )
    evidence = {
        "rate": p_cur,
        "n": n,
        "reference_rate": p_ref,
        "reference_n": nr,
        "relative_degradation": None if relative == float("inf") else relative,
        "threshold": rule.threshold,
        "p_value": p_value,
        "reference": ref_label,
        **extra,
    }
    return Observation(key, "breach" if breach else "ok", summary, p_cur, evidence, allocation=row)


def observe_vs_control(rule: AlertRule, ctx: Context) -> list[Observation]:
    rows = _in_scope(rule, ctx.live)
    by_deployment: dict[int, list[TrafficAllocation]] = defaultdict(list)
    for r in rows:
        by_deployment[r.deployment_id].append(r)
    pairs = []
    for group in by_deployment.values():
        control = next((r for r in group if r.role == TrafficAllocation.Role.CONTROL), None)
        pairs += [(control, r) for r in group if control and r is not control]
    keys = {(r.deployment.application_id, r.model_version_id) for pair in pairs for r in pair}
    totals = rollup_totals(keys, since=ctx.now - rule.window, until=ctx.now)
    out = []
    for control, arm in pairs:
        app_id = arm.deployment.application_id
        out.append(
            compare(
                rule,
                key=f"deployment:{arm.deployment_id}/version:{arm.model_version_id}",
                row=arm,
                cur=rate(totals[(app_id, arm.model_version_id)], rule.metric),
                ref=rate(totals[(app_id, control.model_version_id)], rule.metric),
                ref_label=f"control {control.model_version}",
                extra={"control_version_id": control.model_version_id},
            )
        )
    return out


def observe_vs_baseline(rule: AlertRule, ctx: Context) -> list[Observation]:
    """Each live version against the version that served before it, over its last window."""
    targets = _by_app_version(_in_scope(rule, ctx.live))
    totals = rollup_totals(targets, since=ctx.now - rule.window, until=ctx.now)
    deployment_ids = {r.deployment_id for r in targets.values()}
    history = (
        TrafficAllocation.objects.filter(deployment_id__in=deployment_ids, valid_to__isnull=False)
        .exclude(role=TrafficAllocation.Role.SHADOW)
        .select_related("model_version__registered_model")
        .order_by("deployment_id", "-valid_to")
    )
    previous: dict[tuple[int, int], TrafficAllocation] = {}
    for old in history:
        for (app_id, version_id), row in targets.items():
            if row.deployment_id == old.deployment_id and old.model_version_id != version_id:
                previous.setdefault((app_id, version_id), old)
    out = []
    for key, row in targets.items():
        old = previous.get(key)
        if old is None:
            continue  # nothing served before: no baseline to compare with
        ref_totals = rollup_totals(
            [(key[0], old.model_version_id)], since=old.valid_to - rule.window, until=old.valid_to
        )[(key[0], old.model_version_id)]
        out.append(
            compare(
                rule,
                key=f"app:{key[0]}/version:{key[1]}",
                row=row,
                cur=rate(totals[key], rule.metric),
                ref=rate(ref_totals, rule.metric),
                ref_label=f"previous {old.model_version}",
                extra={
                    "baseline_version_id": old.model_version_id,
                    "baseline_until": old.valid_to.isoformat(),
                },
            )
        )
    return out


def observe_replica_mismatch(rule: AlertRule, ctx: Context) -> list[Observation]:
    """Fresh replicas reporting an artifact that is not in their deployment's allocation."""
    rows = _in_scope(rule, ctx.live)
    deployments = {r.deployment_id: r.deployment for r in rows}
    shas: dict[int, set[str]] = defaultdict(set)
    for r in TrafficAllocation.objects.filter(
        deployment_id__in=deployments, valid_to__isnull=True
    ).values_list("deployment_id", "model_version__sha256"):
        shas[r[0]].add(r[1])
    wrong: dict[int, list[str]] = defaultdict(list)
    replicas = Replica.objects.filter(deployment_id__in=deployments).exclude(reported_sha256="")
    for rep in replicas.only(
        "deployment_id", "instance_id", "reported_sha256", "last_heartbeat_at"
    ):
        d = deployments[rep.deployment_id]
        fresh = rep.last_heartbeat_at and rep.last_heartbeat_at >= ctx.now - d.heartbeat_timeout
        if fresh and rep.reported_sha256 not in shas[rep.deployment_id]:
            wrong[rep.deployment_id].append(f"{rep.instance_id}={rep.reported_sha256[:12]}")
    out = []
    for d_id, d in deployments.items():
        count = len(wrong[d_id])
        out.append(
            Observation(
                target_key=f"deployment:{d_id}",
                verdict="breach" if count > rule.threshold else "ok",
                summary=f"{d}: {count} replica(s) serve an artifact outside the allocation",
                value=float(count),
                evidence={"replicas": wrong[d_id][:50], "expected_sha256": sorted(shas[d_id])},
                deployment=d,
            )
        )
    return out


def observe(rule: AlertRule, ctx: Context) -> list[Observation]:
    if rule.metric == M.MODEL_AGE:
        return observe_model_age(rule, ctx)
    if rule.metric == M.REPLICA_MISMATCH:
        return observe_replica_mismatch(rule, ctx)
    if rule.comparison == C.VS_CONTROL_ARM:
        return observe_vs_control(rule, ctx)
    if rule.comparison == C.VS_BASELINE_VERSION:
        return observe_vs_baseline(rule, ctx)
    return observe_absolute_rate(rule, ctx)


# --- Applying the verdicts ---


@dataclass
class EvaluationResult:
    fired: int = 0
    firing: int = 0
    resolved: int = 0
    not_enough_data: int = 0


def evaluate_rule(rule: AlertRule, ctx: Context, result: EvaluationResult) -> None:
    """Fire, refresh or resolve the rule's alerts from its observations."""
    observations = observe(rule, ctx)
    seen = set()
    for obs in observations:
        seen.add(obs.target_key)
        if obs.verdict == "breach":
            row = obs.allocation
            alert = raise_alert(
                rule_key=rule.key,
                target_key=obs.target_key,
                summary=obs.summary,
                evidence=obs.evidence,
                application=row.deployment.application if row else None,
                deployment=obs.deployment or (row.deployment if row else None),
                model_version=row.model_version if row else None,
                value=obs.value,
                at=ctx.now,
            )
            if alert is not None:
                result.fired += alert.started_at == ctx.now
                result.firing += 1
        elif obs.verdict == "ok":
            result.resolved += (
                resolve_alert(
                    rule_key=rule.key, target_key=obs.target_key, reason=obs.summary, at=ctx.now
                )
                is not None
            )
        else:
            result.not_enough_data += 1
    stale = Alert.objects.filter(rule=rule, state=Alert.State.FIRING).exclude(target_key__in=seen)
    for key in stale.values_list("target_key", flat=True):
        resolve_alert(
            rule_key=rule.key, target_key=key, reason="target no longer serves", at=ctx.now
        )
        result.resolved += 1


def evaluate_alert_rules(
    *, now: datetime | None = None, rules: Iterable[AlertRule] | None = None
) -> EvaluationResult:
    """Evaluate every enabled rule (except those their own detector drives)."""
    now = now or timezone.now()
    if rules is None:
        ensure_builtin_rules()
        rules = AlertRule.objects.filter(enabled=True).exclude(key__in=EXTERNAL_RULES)
    ctx = load_context(now)
    result = EvaluationResult()
    for rule in rules:
        evaluate_rule(rule, ctx, result)
    return result
