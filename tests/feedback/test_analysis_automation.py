import pytest

from feedback.rollout_automation import evaluate_running_rollouts
from registry.models import AuditEvent, Rollout, TrafficAllocation
from tests.feedback.rollout_helpers import started_rollout, traffic

STEPS = [
    {"percent": 10, "min_duration_s": 3600, "min_sample": 200},
    {"percent": 50, "min_duration_s": 3600, "min_sample": 200},
    {"percent": 100, "min_duration_s": 3600, "min_sample": 200},
]
GUARDS = [{"metric": "conversion_rate", "max_drop": 0.05, "min_sample": 200}]


@pytest.fixture
def gradual(deployment, model_version_factory):
    base = model_version_factory()
    cand = model_version_factory(registered_model=base.registered_model)
    return started_rollout(deployment, base, cand, steps=STEPS, guardrails=GUARDS)


def live_split(rollout):
    rows = TrafficAllocation.objects.filter(deployment=rollout.deployment, valid_to__isnull=True)
    return {(a.model_version_id, a.weight) for a in rows}


def last_event(rollout):
    return AuditEvent.objects.filter(target_type="Rollout", target_id=str(rollout.pk)).first()


def test_gradual_rollout_advances_by_itself_on_good_data(gradual):
    # given three hours at the 10 % step with equal conversion rates
    traffic(gradual, hours=3, base=(900, 90), cand=(100, 10))

    # when the beat automation runs
    [outcome] = evaluate_running_rollouts()

    # then the rollout moved to 50 % and said why
    gradual.refresh_from_db()
    assert outcome.action == "advanced"
    assert gradual.current_step == 1
    assert live_split(gradual) == {
        (gradual.baseline_version_id, 50),
        (gradual.candidate_version_id, 50),
    }
    event = last_event(gradual)
    assert event.kind == "rollout.advanced"
    assert event.actor_label == "rollout-automation"
    assert "guardrails pass" in event.reason


def test_gradual_rollout_pauses_by_itself_on_bad_data(gradual):
    traffic(gradual, hours=3, base=(2700, 270), cand=(300, 3))

    [outcome] = evaluate_running_rollouts()

    gradual.refresh_from_db()
    assert outcome.action == "paused"
    assert gradual.state == Rollout.State.PAUSED
    assert live_split(gradual) == {(gradual.baseline_version_id, 100)}
    event = last_event(gradual)
    assert event.kind == "rollout.paused"
    assert event.reason.startswith("guardrail failed: conversion_rate -90.0%")


def test_rollout_rolls_back_on_failure_when_configured(deployment, model_version_factory):
    base = model_version_factory()
    cand = model_version_factory(registered_model=base.registered_model)
    rollout = started_rollout(
        deployment, base, cand, steps=STEPS, guardrails=GUARDS, on_failure="rollback"
    )
    traffic(rollout, hours=3, base=(2700, 270), cand=(300, 3))

    [outcome] = evaluate_running_rollouts()

    rollout.refresh_from_db()
    assert outcome.action == "rolled_back"
    assert rollout.state == Rollout.State.ROLLED_BACK
    assert live_split(rollout) == {(base.pk, 100)}


def test_rollout_pauses_on_sample_ratio_mismatch(gradual):
    traffic(gradual, hours=3, base=(500, 50), cand=(500, 50))  # configured 90/10

    [outcome] = evaluate_running_rollouts()

    gradual.refresh_from_db()
    assert gradual.state == Rollout.State.PAUSED
    assert "sample-ratio mismatch" in last_event(gradual).reason


def test_gradual_rollout_waits_for_its_step_sample(gradual):
    traffic(gradual, hours=3, base=(270, 27), cand=(30, 3))  # 90 candidate exposures < 200

    [outcome] = evaluate_running_rollouts()

    gradual.refresh_from_db()
    assert outcome.action == "waiting"
    assert (gradual.state, gradual.current_step) == (Rollout.State.RUNNING, 0)


def test_gradual_rollout_waits_for_its_step_duration(deployment, model_version_factory):
    base = model_version_factory()
    cand = model_version_factory(registered_model=base.registered_model)
    steps = [{**s, "min_duration_s": 86400} for s in STEPS]
    rollout = started_rollout(deployment, base, cand, steps=steps, guardrails=GUARDS)
    traffic(rollout, hours=3, base=(900, 90), cand=(100, 10))

    [outcome] = evaluate_running_rollouts()

    rollout.refresh_from_db()
    assert outcome.action == "waiting"
    assert rollout.current_step == 0


def test_automation_task_runs_the_service(gradual):
    from feedback.alert_tasks import evaluate_rollouts_task

    traffic(gradual, hours=3, base=(900, 90), cand=(100, 10))

    evaluate_rollouts_task.apply()

    gradual.refresh_from_db()
    assert gradual.current_step == 1
