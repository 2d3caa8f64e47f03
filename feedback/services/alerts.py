"""Alerts: raise (deduplicated), resolve, and the built-in rules.

`raise_alert` and `resolve_alert` are the entry points for any detector — the rule
evaluator in feedback.alert_evaluation, and the replica probes, which raise
"replica-probe-mismatch" per deployment. Both are idempotent: raising an alert that is
already firing refreshes its evidence; resolving one that is not firing does nothing.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from registry.exceptions import InvalidInput, PermissionDenied
from registry.models import Application, Deployment, ModelVersion
from registry.roles import Actor
from registry.services import record_audit_event

from ..models import Alert, AlertRule
from .notifications import queue_notifications

M, C, S = AlertRule.Metric, AlertRule.Comparison, AlertRule.Severity

# Rules that exist on every installation; their thresholds may be tuned, not their keys.
BUILTIN_RULES: list[dict[str, Any]] = [
    {
        "key": "model-age-slo",
        "name": "Model older than its application's age SLO",
        "metric": M.MODEL_AGE,
        "comparison": C.ABSOLUTE,
        "threshold": 1.0,
        "window": timedelta(hours=1),
        "min_sample": 1,
        "severity": S.CRITICAL,
    },
    {
        "key": "accuracy-drop",
        "stops_rollouts": True,
        "name": "Online accuracy dropped vs the previous version",
        "metric": M.ACCURACY,
        "comparison": C.VS_BASELINE_VERSION,
        "threshold": 0.05,
        "window": timedelta(hours=24),
        "min_sample": 200,
        "severity": S.WARNING,
    },
    {
        "key": "conversion-drop",
        "stops_rollouts": True,
        "name": "Conversion rate dropped vs the previous version",
        "metric": M.CONVERSION_RATE,
        "comparison": C.VS_BASELINE_VERSION,
        "threshold": 0.10,
        "window": timedelta(hours=24),
        "min_sample": 1000,
        "severity": S.WARNING,
    },
    {
        "key": "conversion-drop-vs-control",
        "stops_rollouts": True,
        "name": "Conversion rate of a candidate arm below the control arm",
        "metric": M.CONVERSION_RATE,
        "comparison": C.VS_CONTROL_ARM,
        "threshold": 0.10,
        "window": timedelta(hours=24),
        "min_sample": 1000,
        "severity": S.WARNING,
    },
    {
        "key": "bad-recommendation-rise",
        "stops_rollouts": True,
        "name": "Bad-recommendation rate rose vs the previous version",
        "metric": M.BAD_RECOMMENDATION_RATE,
        "comparison": C.VS_BASELINE_VERSION,
        "threshold": 0.25,
        "window": timedelta(hours=24),
        "min_sample": 1000,
        "severity": S.WARNING,
    },
    {
        "key": "replica-mismatch",
        "name": "Replicas report an artifact the deployment does not serve",
        "metric": M.REPLICA_MISMATCH,
        "comparison": C.ABSOLUTE,
        "threshold": 0.0,
        "window": timedelta(minutes=5),
        "min_sample": 1,
        "severity": S.CRITICAL,
    },
    {
        "key": "replica-probe-mismatch",
        "name": "Replicas give different answers to the golden inputs",
        "metric": M.REPLICA_MISMATCH,
        "comparison": C.ABSOLUTE,
        "threshold": 0.0,
        "window": timedelta(minutes=5),
        "min_sample": 1,
        "severity": S.CRITICAL,
    },
]
# Raised and resolved by their detector (the replica probe), not by the rule evaluator.
EXTERNAL_RULES = frozenset({"replica-probe-mismatch"})


def ensure_builtin_rules() -> int:
    """Create missing built-in rules (never overwrites a tuned one); returns how many."""
    existing = set(AlertRule.objects.filter(builtin=True).values_list("key", flat=True))
    missing = [
        AlertRule(builtin=True, **spec) for spec in BUILTIN_RULES if spec["key"] not in existing
    ]
    AlertRule.objects.bulk_create(missing, ignore_conflicts=True)
    return len(missing)


# --- Firing and resolving ---


def _rule(rule_key: str) -> AlertRule | None:
    rule = AlertRule.objects.filter(key=rule_key).first()
    if rule is None and any(spec["key"] == rule_key for spec in BUILTIN_RULES):
        ensure_builtin_rules()
        rule = AlertRule.objects.filter(key=rule_key).first()
    return rule


@transaction.atomic
def raise_alert(
    *,
    rule_key: str,
    target_key: str,
    summary: str,
    evidence: dict[str, Any] | None = None,
    application: Application | None = None,
    deployment: Deployment | None = None,
    model_version: ModelVersion | None = None,
    value: float | None = None,
    at: datetime | None = None,
) -> Alert | None:
    """Fire the rule's alert for `target_key`, or refresh it if it is already firing.

    Returns None when the rule is disabled or unknown. A new alert notifies its channels.
    """
    rule = _rule(rule_key)
    if rule is None or not rule.enabled:
        return None
    now = at or timezone.now()
    fields = {
        "summary": summary[:500],
        "evidence": evidence or {},
        "value": value,
        "last_seen_at": now,
        "severity": rule.severity,
    }
    open_alert = _open(rule, target_key)
    if open_alert is None:
        application = application or (deployment.application if deployment else None)
        try:
            with transaction.atomic():
                alert = Alert.objects.create(
                    rule=rule,
                    target_key=target_key,
                    application=application,
                    deployment=deployment,
                    model_version=model_version,
                    started_at=now,
                    **fields,
                )
        except IntegrityError:
            open_alert = _open(rule, target_key)  # a concurrent evaluator raised it first
            if open_alert is None:
                return None
        else:
            queue_notifications(alert=alert, event="firing", at=now)
            if rule.stops_rollouts and model_version is not None:
                from ..rollout_automation import stop_rollouts_for_alert

                stop_rollouts_for_alert(alert)
            return alert
    for name, value_ in fields.items():
        setattr(open_alert, name, value_)
    open_alert.save(update_fields=[*fields, "updated_at"])
    return open_alert


def _open(rule: AlertRule, target_key: str) -> Alert | None:
    return (
        Alert.objects.select_for_update(of=("self",))
        .select_related("rule", "application")
        .filter(rule=rule, target_key=target_key, state=Alert.State.FIRING)
        .first()
    )


@transaction.atomic
def resolve_alert(
    *, rule_key: str, target_key: str, reason: str = "", at: datetime | None = None
) -> Alert | None:
    """Resolve the firing alert of the rule for `target_key`, if any, and notify."""
    rule = AlertRule.objects.filter(key=rule_key).first()
    alert = _open(rule, target_key) if rule else None
    if alert is None:
        return None
    alert.state = Alert.State.RESOLVED
    alert.resolved_at = at or timezone.now()
    alert.resolution = (reason or "condition cleared")[:500]
    alert.save(update_fields=["state", "resolved_at", "resolution", "updated_at"])
    queue_notifications(alert=alert, event="resolved", at=alert.resolved_at)
    return alert


# --- Rule management ---


def _check_rule(metric: str, comparison: str, threshold: float) -> None:
    if metric in (M.MODEL_AGE, M.REPLICA_MISMATCH) and comparison != C.ABSOLUTE:
        raise InvalidInput(f"{metric} only supports the absolute comparison", field="comparison")
    if comparison != C.ABSOLUTE and not 0 < threshold <= 10:
        raise InvalidInput("a relative threshold is a fraction such as 0.05", field="threshold")


@transaction.atomic
def create_alert_rule(
    *,
    actor: Actor,
    key: str,
    name: str,
    metric: str,
    threshold: float,
    comparison: str = C.ABSOLUTE,
    window: timedelta = timedelta(hours=24),
    min_sample: int = 100,
    severity: str = S.WARNING,
    application: Application | None = None,
    enabled: bool = True,
    stops_rollouts: bool = False,
) -> AlertRule:
    """Create a custom alert rule (devops)."""
    if not actor.is_devops:
        raise PermissionDenied("only the devops role may manage alert rules")
    _check_rule(metric, comparison, threshold)
    if AlertRule.objects.filter(key=key).exists():
        raise InvalidInput(f"a rule {key!r} already exists", field="key")
    rule = AlertRule.objects.create(
        key=key,
        name=name,
        metric=metric,
        comparison=comparison,
        threshold=threshold,
        window=window,
        min_sample=min_sample,
        severity=severity,
        application=application,
        enabled=enabled,
        stops_rollouts=stops_rollouts,
    )
    record_audit_event(
        actor=actor,
        kind="alert_rule.created",
        target=rule,
        application=application,
        after={"metric": metric, "comparison": comparison, "threshold": threshold},
    )
    return rule


@transaction.atomic
def update_alert_rule(*, actor: Actor, rule: AlertRule, **changes: Any) -> AlertRule:
    """Tune a rule: threshold, window, min_sample, severity, enabled, name, stops_rollouts."""
    if not actor.is_devops:
        raise PermissionDenied("only the devops role may manage alert rules")
    allowed = {"name", "threshold", "window", "min_sample", "severity", "enabled", "stops_rollouts"}
    changes = {k: v for k, v in changes.items() if k in allowed}
    _check_rule(rule.metric, rule.comparison, changes.get("threshold", rule.threshold))
    before = {k: str(getattr(rule, k)) for k in changes}
    for name, value in changes.items():
        setattr(rule, name, value)
    rule.save()
    record_audit_event(
        actor=actor,
        kind="alert_rule.changed",
        target=rule,
        application=rule.application,
        before=before,
        after={k: str(v) for k, v in changes.items()},
    )
    return rule
