"""Beat automation of running rollouts: advance a gradual rollout whose step is done and
healthy; pause (or roll back) any rollout whose guardrail fails or whose split shows SRM.

Transitions go through registry.services, so they are locked, audited and move traffic
exactly as a human's would; the verdict is the audit reason.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from django.utils import timezone

from registry.exceptions import DomainError
from registry.models import Rollout
from registry.roles import Actor
from registry.rollout_selectors import running_rollouts
from registry.services import advance_rollout, pause_rollout, rollback_rollout

from .analysis import analyse_rollout, step_progress, verdict_summary
from .models import Alert

log = logging.getLogger(__name__)
AUTOMATION = Actor.system("rollout-automation")


@dataclass(frozen=True)
class Outcome:
    """What the automation did to one rollout, and why."""

    rollout_id: int
    action: str  # "advanced" | "paused" | "rolled_back" | "waiting" | "skipped"
    reason: str


def evaluate_rollout(rollout: Rollout, *, now: datetime | None = None) -> Outcome:
    """Judge one running rollout and act on the verdict."""
    now = now or timezone.now()
    analysis = analyse_rollout(rollout, now=now)
    problems = list(verdict_summary(analysis))
    try:
        if problems:
            reason = "; ".join(problems)
            if rollout.on_failure == Rollout.OnFailure.ROLLBACK:
                rollback_rollout(actor=AUTOMATION, rollout_id=rollout.pk, reason=reason)
                return Outcome(rollout.pk, "rolled_back", reason)
            pause_rollout(actor=AUTOMATION, rollout_id=rollout.pk, reason=reason)
            return Outcome(rollout.pk, "paused", reason)
        if rollout.strategy != Rollout.Strategy.GRADUAL:
            return Outcome(rollout.pk, "waiting", "only gradual rollouts advance by themselves")
        return _maybe_advance(rollout, analysis, now)
    except DomainError as exc:
        # someone (a human, another beat run) changed the rollout since we read it
        return Outcome(rollout.pk, "skipped", exc.message)


def _maybe_advance(rollout: Rollout, analysis: dict, now: datetime) -> Outcome:
    progress = step_progress(rollout, now=now)
    pending = [g["metric"] for g in analysis["guardrails"] if g["verdict"] != "pass"]
    if not progress["duration_met"] or not progress["sample_met"] or pending:
        why = (
            f"step {rollout.current_step}: {progress['elapsed_s']:.0f} s elapsed, "
            f"{progress['sample']} candidate exposures; guardrails without a pass: {pending}"
        )
        return Outcome(rollout.pk, "waiting", why)
    passed = ", ".join(g["detail"] for g in analysis["guardrails"]) or "no guardrails"
    step = rollout.steps[rollout.current_step]
    reason = (
        f"step {rollout.current_step} ({step['percent']} %) done: "
        f"{progress['elapsed_s']:.0f} s >= {step['min_duration_s']} s, "
        f"{progress['sample']} >= {step['min_sample']} candidate exposures; "
        f"SRM {analysis['srm']['verdict']}; guardrails pass: {passed}"
    )
    advance_rollout(
        actor=AUTOMATION, rollout_id=rollout.pk, reason=reason, from_step=rollout.current_step
    )
    return Outcome(rollout.pk, "advanced", reason)


def evaluate_running_rollouts(*, now: datetime | None = None) -> list[Outcome]:
    """Judge every running rollout; one failure does not stop the others."""
    outcomes = []
    for rollout in running_rollouts():
        try:
            outcomes.append(evaluate_rollout(rollout, now=now))
        except Exception:
            log.exception("rollout %s: evaluation failed", rollout.pk)
            outcomes.append(Outcome(rollout.pk, "skipped", "evaluation failed"))
    return outcomes


def stop_rollouts_for_alert(alert: Alert) -> list[Outcome]:
    """An alert fired for a rollout's candidate: pause (or roll back) that rollout."""
    rollouts = running_rollouts().filter(
        candidate_version_id=alert.model_version_id,
        deployment__application_id=alert.application_id,
    )
    outcomes = []
    reason = f"alert {alert.rule.key} fired: {alert.summary}"
    for rollout in rollouts:
        rollback = rollout.on_failure == Rollout.OnFailure.ROLLBACK
        try:
            (rollback_rollout if rollback else pause_rollout)(
                actor=AUTOMATION, rollout_id=rollout.pk, reason=reason
            )
        except DomainError as exc:
            outcomes.append(Outcome(rollout.pk, "skipped", exc.message))
            continue
        outcomes.append(Outcome(rollout.pk, "rolled_back" if rollback else "paused", reason))
    return outcomes
