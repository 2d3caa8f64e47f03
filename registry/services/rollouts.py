"""Rollouts: a state machine whose every transition moves traffic and is audited.

    draft → running ⇄ paused → promoted | rolled_back | aborted   (draft → aborted too)

Each transition locks the rollout row, changes the deployment's TrafficAllocation through
set_allocation and records an AuditEvent, all in one transaction: either the state, the
split and the audit trail all change, or none does.

Traffic per state: running serves the current step's split (ab_test: treatment at the
step's percent, 50 by default; canary and gradual: the step's percent; shadow: the candidate
gets a copy of the traffic at weight 0). Paused drains the candidate (baseline 100 %) so users
stop paying while a human looks; resume restores the step and restarts its clock.
Promoted sends 100 % to the candidate; rolled back and aborted send 100 % to the baseline.
"""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from ..exceptions import IllegalTransition, InvalidInput, NotFound, PermissionDenied
from ..models import Deployment, ModelVersion, Rollout, TrafficAllocation
from ..roles import Actor
from .audit import record_audit_event
from .traffic import AllocationSpec, set_allocation

State = Rollout.State
Role = TrafficAllocation.Role

# Metrics a guardrail may watch; feedback.analysis computes them from hourly rollups.
# Each maps to True when higher is better.
GUARDRAIL_METRICS: dict[str, bool] = {
    "conversion_rate": True,
    "click_through_rate": True,
    "accuracy": True,
    "bad_recommendation_rate": False,
    "conversion_value": True,
}
DEFAULT_STEPS: dict[str, list[dict[str, int]]] = {
    Rollout.Strategy.AB_TEST: [{"percent": 50, "min_duration_s": 0, "min_sample": 0}],
    Rollout.Strategy.CANARY: [{"percent": 5, "min_duration_s": 3600, "min_sample": 1000}],
    Rollout.Strategy.GRADUAL: [
        {"percent": p, "min_duration_s": 3600, "min_sample": 1000} for p in (5, 25, 50, 100)
    ],
    Rollout.Strategy.SHADOW: [],
}

# Legal source states of each action.
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "start": (State.DRAFT,),
    "pause": (State.RUNNING,),
    "resume": (State.PAUSED,),
    "promote": (State.RUNNING, State.PAUSED),
    "rollback": (State.RUNNING, State.PAUSED),
    "abort": (State.DRAFT, State.RUNNING, State.PAUSED),
    "advance": (State.RUNNING,),
}
TARGET: dict[str, str] = {
    "start": State.RUNNING,
    "pause": State.PAUSED,
    "resume": State.RUNNING,
    "promote": State.PROMOTED,
    "rollback": State.ROLLED_BACK,
    "abort": State.ABORTED,
    "advance": State.RUNNING,
}


# --- Validation ---


def _number(item: dict[str, Any], key: str, *, field: str, lo: float, hi: float) -> float:
    value = item.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise InvalidInput(f"{key} must be a number between {lo:g} and {hi:g}", field=field)
    return value


def validate_steps(strategy: str, steps: Any) -> list[dict[str, int]]:
    """Normalise steps: percents strictly increasing in 1..100, durations and samples >= 0."""
    if strategy == Rollout.Strategy.SHADOW:
        return []
    if steps is None or steps == []:
        return [dict(s) for s in DEFAULT_STEPS[strategy]]
    if not isinstance(steps, list) or not all(isinstance(s, dict) for s in steps):
        raise InvalidInput("steps must be a list of objects", field="steps")
    if strategy == Rollout.Strategy.AB_TEST and len(steps) != 1:
        raise InvalidInput("an A/B test has exactly one step (the treatment share)", field="steps")
    out: list[dict[str, int]] = []
    last = 0
    for i, step in enumerate(steps):
        field = f"steps[{i}]"
        unknown = set(step) - {"percent", "min_duration_s", "min_sample"}
        if unknown:
            raise InvalidInput(f"unknown key(s) {', '.join(sorted(unknown))}", field=field)
        percent = int(_number(step, "percent", field=field, lo=1, hi=100))
        if percent <= last:
            raise InvalidInput("step percents must increase", field=field)
        last = percent
        step = {"min_duration_s": 0, "min_sample": 0, **step}
        out.append(
            {
                "percent": percent,
                "min_duration_s": int(_number(step, "min_duration_s", field=field, lo=0, hi=1e8)),
                "min_sample": int(_number(step, "min_sample", field=field, lo=0, hi=1e12)),
            }
        )
    if strategy == Rollout.Strategy.AB_TEST and out[0]["percent"] == 100:
        raise InvalidInput("an A/B test needs traffic on both arms", field="steps[0]")
    return out


def validate_guardrails(guardrails: Any) -> list[dict[str, Any]]:
    """Guardrails: [{"metric", "max_drop" (relative tolerance, 0..1), "min_sample"}]."""
    if guardrails is None:
        return []
    if not isinstance(guardrails, list) or not all(isinstance(g, dict) for g in guardrails):
        raise InvalidInput("guardrails must be a list of objects", field="guardrails")
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, rule in enumerate(guardrails):
        field = f"guardrails[{i}]"
        unknown = set(rule) - {"metric", "max_drop", "min_sample"}
        if unknown:
            raise InvalidInput(f"unknown key(s) {', '.join(sorted(unknown))}", field=field)
        metric = rule.get("metric")
        if metric not in GUARDRAIL_METRICS:
            names = ", ".join(GUARDRAIL_METRICS)
            raise InvalidInput(f"metric must be one of {names}", field=field)
        if metric in seen:
            raise InvalidInput(f"metric {metric} has two guardrails", field=field)
        seen.add(metric)
        rule = {"max_drop": 0.0, "min_sample": 100, **rule}
        out.append(
            {
                "metric": metric,
                "max_drop": float(_number(rule, "max_drop", field=field, lo=0, hi=1)),
                "min_sample": int(_number(rule, "min_sample", field=field, lo=1, hi=1e12)),
            }
        )
    return out


# --- Traffic per state ---


def candidate_role(rollout: Rollout) -> str:
    return {
        Rollout.Strategy.AB_TEST: Role.TREATMENT,
        Rollout.Strategy.SHADOW: Role.SHADOW,
    }.get(rollout.strategy, Role.CANARY)


def running_split(rollout: Rollout, step: int | None = None) -> list[AllocationSpec]:
    """The split of a running rollout at `step` (its current one by default)."""
    base, cand = rollout.baseline_version, rollout.candidate_version
    if rollout.strategy == Rollout.Strategy.SHADOW:
        return [AllocationSpec(base, 100, Role.CONTROL), AllocationSpec(cand, 0, Role.SHADOW)]
    index = rollout.current_step if step is None else step
    percent = int(rollout.steps[index]["percent"])
    specs = [AllocationSpec(cand, percent, candidate_role(rollout))]
    if percent < 100:
        specs.insert(0, AllocationSpec(base, 100 - percent, Role.CONTROL))
    return specs


def only(version: ModelVersion) -> list[AllocationSpec]:
    return [AllocationSpec(version, 100, Role.CONTROL)]


def configured_weights(rollout: Rollout) -> dict[str, int]:
    """Live weights {"baseline", "candidate"} of the current step (for the SRM test)."""
    if rollout.strategy == Rollout.Strategy.SHADOW or not rollout.steps:
        return {"baseline": 100, "candidate": 0}
    percent = int(rollout.steps[min(rollout.current_step, len(rollout.steps) - 1)]["percent"])
    return {"baseline": 100 - percent, "candidate": percent}


# --- Services ---


def _snapshot(rollout: Rollout) -> dict[str, Any]:
    return {
        "state": rollout.state,
        "current_step": rollout.current_step,
        "percent": rollout.current_percent,
    }


@transaction.atomic
def create_rollout(
    *,
    actor: Actor,
    deployment: Deployment,
    strategy: str,
    baseline_version: ModelVersion,
    candidate_version: ModelVersion,
    steps: list[dict[str, Any]] | None = None,
    guardrails: list[dict[str, Any]] | None = None,
    on_failure: str = Rollout.OnFailure.PAUSE,
    reason: str = "",
) -> Rollout:
    """Create a draft rollout; nothing changes in traffic until it starts."""
    if not actor.is_devops:
        raise PermissionDenied("only the devops role may create rollouts")
    if strategy not in Rollout.Strategy.values:
        raise InvalidInput(f"unknown strategy {strategy!r}", field="strategy")
    if on_failure not in Rollout.OnFailure.values:
        raise InvalidInput(f"unknown on_failure {on_failure!r}", field="on_failure")
    if baseline_version.pk == candidate_version.pk:
        raise InvalidInput("candidate must differ from baseline", field="candidate_version")
    rollout = Rollout.objects.create(
        deployment=deployment,
        strategy=strategy,
        baseline_version=baseline_version,
        candidate_version=candidate_version,
        steps=validate_steps(strategy, steps),
        guardrails=validate_guardrails(guardrails),
        on_failure=on_failure,
        created_by=actor.user,
    )
    record_audit_event(
        actor=actor,
        kind="rollout.created",
        target=rollout,
        application=deployment.application,
        reason=reason,
        after={
            "strategy": strategy,
            "baseline": str(baseline_version),
            "candidate": str(candidate_version),
            "steps": rollout.steps,
            "guardrails": rollout.guardrails,
            "on_failure": on_failure,
        },
    )
    return rollout


def _lock(rollout_id: int) -> Rollout:
    rollout = (
        Rollout.objects.select_for_update(of=("self",))
        .select_related(
            "deployment__application",
            "baseline_version__registered_model",
            "candidate_version__registered_model",
        )
        .filter(pk=rollout_id)
        .first()
    )
    if rollout is None:
        raise NotFound(f"no rollout {rollout_id}")
    return rollout


@transaction.atomic
def _transition(
    *, actor: Actor, rollout_id: int, action: str, reason: str, expect_step: int | None = None
) -> Rollout:
    """The common path of every transition: check, move traffic, save, audit."""
    if not actor.is_devops:
        raise PermissionDenied("only the devops role may change a rollout")
    if not (reason or "").strip():
        raise InvalidInput("a reason is required", field="reason")
    rollout = _lock(rollout_id)
    if rollout.state not in TRANSITIONS[action]:
        raise IllegalTransition(f"cannot {action} a rollout that is {rollout.state}")
    if expect_step is not None and rollout.current_step != expect_step:
        # another worker (or a human) moved it since the caller looked: do nothing twice
        raise IllegalTransition(f"rollout is at step {rollout.current_step}, not {expect_step}")
    before, now = _snapshot(rollout), timezone.now()
    if action == "advance" and rollout.current_step + 1 >= len(rollout.steps):
        action = "promote"  # advancing past the last step completes the rollout
    split = _apply(rollout, action, now)
    if split is not None:
        set_allocation(
            actor=actor,
            deployment=rollout.deployment,
            allocations=split,
            reason=f"rollout #{rollout.pk} {action}: {reason}",
            at=now,
        )
    try:
        with transaction.atomic():
            rollout.save()
    except IntegrityError as exc:
        raise IllegalTransition(
            f"{rollout.deployment} already has a running or paused rollout"
        ) from exc
    record_audit_event(
        actor=actor,
        kind=f"rollout.{'advanced' if action == 'advance' else TARGET[action]}",
        target=rollout,
        application=rollout.deployment.application,
        reason=reason.strip(),
        before=before,
        after=_snapshot(rollout),
        at=now,
    )
    return rollout


def _apply(rollout: Rollout, action: str, now: Any) -> list[AllocationSpec] | None:
    """Change the rollout's fields for `action`; return the new split (None: unchanged)."""
    was_draft = rollout.state == State.DRAFT
    rollout.state = TARGET[action]
    if action == "start":
        rollout.started_at = rollout.step_started_at = now
        rollout.current_step = 0
        return running_split(rollout)
    if action == "resume":
        rollout.step_started_at = now
        return running_split(rollout)
    if action == "advance":
        rollout.current_step += 1
        rollout.step_started_at = now
        return running_split(rollout)
    if action == "pause":
        return only(rollout.baseline_version)
    rollout.finished_at = now
    if action == "promote":
        return only(rollout.candidate_version)
    return None if was_draft else only(rollout.baseline_version)


def start_rollout(*, actor: Actor, rollout_id: int, reason: str) -> Rollout:
    """Start a draft: the candidate gets its first step's share of traffic."""
    return _transition(actor=actor, rollout_id=rollout_id, action="start", reason=reason)


def pause_rollout(*, actor: Actor, rollout_id: int, reason: str) -> Rollout:
    """Pause a running rollout: the candidate is drained until it resumes."""
    return _transition(actor=actor, rollout_id=rollout_id, action="pause", reason=reason)


def resume_rollout(*, actor: Actor, rollout_id: int, reason: str) -> Rollout:
    """Resume a paused rollout at its current step; the step's clock restarts."""
    return _transition(actor=actor, rollout_id=rollout_id, action="resume", reason=reason)


def promote_rollout(*, actor: Actor, rollout_id: int, reason: str) -> Rollout:
    """Finish with the candidate serving 100 % of traffic."""
    return _transition(actor=actor, rollout_id=rollout_id, action="promote", reason=reason)


def rollback_rollout(*, actor: Actor, rollout_id: int, reason: str) -> Rollout:
    """Finish with the baseline serving 100 % of traffic."""
    return _transition(actor=actor, rollout_id=rollout_id, action="rollback", reason=reason)


def abort_rollout(*, actor: Actor, rollout_id: int, reason: str) -> Rollout:
    """Give up on a rollout (a draft, or a started one, whose traffic returns to the baseline)."""
    return _transition(actor=actor, rollout_id=rollout_id, action="abort", reason=reason)


def advance_rollout(
    *, actor: Actor, rollout_id: int, reason: str, from_step: int | None = None
) -> Rollout:
    """Move a running rollout to its next step; past the last step it is promoted.

    `from_step` makes the call idempotent: a second worker that saw the same step gets an
    IllegalTransition instead of skipping a step.
    """
    return _transition(
        actor=actor, rollout_id=rollout_id, action="advance", reason=reason, expect_step=from_step
    )


ROLLOUT_ACTIONS = {
    "start": start_rollout,
    "pause": pause_rollout,
    "resume": resume_rollout,
    "promote": promote_rollout,
    "rollback": rollback_rollout,
    "abort": abort_rollout,
    "advance": advance_rollout,
}
