import pytest

from registry.exceptions import IllegalTransition, InvalidInput, PermissionDenied
from registry.models import AuditEvent, Rollout, TrafficAllocation
from registry.roles import Actor
from registry.services import (
    AllocationSpec,
    abort_rollout,
    advance_rollout,
    create_rollout,
    pause_rollout,
    promote_rollout,
    resume_rollout,
    rollback_rollout,
    set_allocation,
    start_rollout,
)

GRADUAL_STEPS = [
    {"percent": 10, "min_duration_s": 60, "min_sample": 10},
    {"percent": 50, "min_duration_s": 60, "min_sample": 10},
    {"percent": 100, "min_duration_s": 60, "min_sample": 10},
]


@pytest.fixture
def serving(deployment, model_version_factory, system_actor):
    """A deployment served 100 % by a baseline, and a candidate of the same model."""
    base = model_version_factory()
    cand = model_version_factory(registered_model=base.registered_model)
    set_allocation(
        actor=system_actor, deployment=deployment, allocations=[AllocationSpec(base, 100)]
    )
    return deployment, base, cand


def make(actor, serving, strategy="gradual", steps=GRADUAL_STEPS, **kw):
    deployment, base, cand = serving
    return create_rollout(
        actor=actor,
        deployment=deployment,
        strategy=strategy,
        baseline_version=base,
        candidate_version=cand,
        steps=steps,
        **kw,
    )


def split(deployment):
    rows = TrafficAllocation.objects.filter(deployment=deployment, valid_to__isnull=True)
    return {(r.model_version_id, r.weight, r.role) for r in rows}


def test_create_rollout_is_a_draft_and_leaves_traffic_alone(serving, devops_actor):
    deployment, base, _ = serving

    rollout = make(devops_actor, serving)

    assert rollout.state == Rollout.State.DRAFT
    assert split(deployment) == {(base.pk, 100, "control")}
    assert AuditEvent.objects.filter(kind="rollout.created", target_id=str(rollout.pk)).exists()


def test_create_rollout_rejects_decreasing_steps(serving, devops_actor):
    with pytest.raises(InvalidInput) as err:
        make(devops_actor, serving, steps=[{"percent": 50}, {"percent": 20}])

    assert err.value.field == "steps[1]"
    assert not Rollout.objects.exists()


def test_create_rollout_rejects_unknown_guardrail_metric(serving, devops_actor):
    with pytest.raises(InvalidInput) as err:
        make(devops_actor, serving, guardrails=[{"metric": "vibes", "max_drop": 0.1}])

    assert err.value.field == "guardrails[0]"


def test_create_rollout_defaults_ab_test_to_a_fifty_fifty_step(serving, devops_actor):
    rollout = make(devops_actor, serving, strategy="ab_test", steps=None)

    assert rollout.steps == [{"percent": 50, "min_duration_s": 0, "min_sample": 0}]


def test_start_rollout_splits_gradual_traffic_at_first_step_with_audit(serving, devops_actor):
    deployment, base, cand = serving
    rollout = make(devops_actor, serving)

    rollout = start_rollout(actor=devops_actor, rollout_id=rollout.pk, reason="ship it")

    assert rollout.state == Rollout.State.RUNNING
    assert rollout.started_at is not None
    assert split(deployment) == {(base.pk, 90, "control"), (cand.pk, 10, "canary")}
    event = AuditEvent.objects.get(kind="rollout.running", target_id=str(rollout.pk))
    assert (event.actor_label, event.reason) == ("dora-devops", "ship it")
    assert event.before["state"] == "draft"
    assert event.after == {"state": "running", "current_step": 0, "percent": 10}


def test_start_ab_test_uses_control_and_treatment_roles(serving, devops_actor):
    deployment, base, cand = serving
    rollout = make(devops_actor, serving, strategy="ab_test", steps=[{"percent": 30}])

    start_rollout(actor=devops_actor, rollout_id=rollout.pk, reason="experiment")

    assert split(deployment) == {(base.pk, 70, "control"), (cand.pk, 30, "treatment")}


def test_start_shadow_gives_the_candidate_a_copy_at_weight_zero(serving, devops_actor):
    deployment, base, cand = serving
    rollout = make(devops_actor, serving, strategy="shadow", steps=None)

    start_rollout(actor=devops_actor, rollout_id=rollout.pk, reason="dark launch")

    assert split(deployment) == {(base.pk, 100, "control"), (cand.pk, 0, "shadow")}


def test_pause_drains_the_candidate_and_resume_restores_the_step(serving, devops_actor):
    deployment, base, cand = serving
    rollout = make(devops_actor, serving)
    start_rollout(actor=devops_actor, rollout_id=rollout.pk, reason="go")

    pause_rollout(actor=devops_actor, rollout_id=rollout.pk, reason="looking at a dip")
    paused = split(deployment)
    rollout = resume_rollout(actor=devops_actor, rollout_id=rollout.pk, reason="dip explained")

    assert paused == {(base.pk, 100, "control")}
    assert rollout.state == Rollout.State.RUNNING
    assert split(deployment) == {(base.pk, 90, "control"), (cand.pk, 10, "canary")}


def test_promote_sends_all_traffic_to_the_candidate(serving, devops_actor):
    deployment, _, cand = serving
    rollout = make(devops_actor, serving)
    start_rollout(actor=devops_actor, rollout_id=rollout.pk, reason="go")

    rollout = promote_rollout(actor=devops_actor, rollout_id=rollout.pk, reason="metrics good")

    assert rollout.state == Rollout.State.PROMOTED
    assert rollout.finished_at is not None
    assert split(deployment) == {(cand.pk, 100, "control")}


@pytest.mark.parametrize("action", [rollback_rollout, abort_rollout])
def test_rollback_and_abort_return_traffic_to_the_baseline(serving, devops_actor, action):
    deployment, base, _ = serving
    rollout = make(devops_actor, serving)
    start_rollout(actor=devops_actor, rollout_id=rollout.pk, reason="go")

    rollout = action(actor=devops_actor, rollout_id=rollout.pk, reason="conversion dropped")

    assert rollout.state in (Rollout.State.ROLLED_BACK, Rollout.State.ABORTED)
    assert split(deployment) == {(base.pk, 100, "control")}


def test_abort_a_draft_changes_no_traffic(serving, devops_actor):
    deployment, base, _ = serving
    rollout = make(devops_actor, serving)
    changes = AuditEvent.objects.filter(kind="allocation.changed").count()

    rollout = abort_rollout(actor=devops_actor, rollout_id=rollout.pk, reason="wrong candidate")

    assert rollout.state == Rollout.State.ABORTED
    assert AuditEvent.objects.filter(kind="allocation.changed").count() == changes
    assert split(deployment) == {(base.pk, 100, "control")}


@pytest.mark.parametrize(
    ("state", "action"),
    [
        ("draft", pause_rollout),
        ("draft", promote_rollout),
        ("running", start_rollout),
        ("running", resume_rollout),
        ("paused", pause_rollout),
        ("promoted", rollback_rollout),
        ("rolled_back", start_rollout),
        ("aborted", resume_rollout),
    ],
)
def test_illegal_transitions_raise_and_change_nothing(rollout_factory, devops_actor, state, action):
    rollout = rollout_factory(state=state)
    before = AuditEvent.objects.count()

    with pytest.raises(IllegalTransition):
        action(actor=devops_actor, rollout_id=rollout.pk, reason="try")

    rollout.refresh_from_db()
    assert rollout.state == state
    assert AuditEvent.objects.count() == before
    assert not TrafficAllocation.objects.filter(deployment=rollout.deployment).exists()


def test_transition_requires_a_reason(serving, devops_actor):
    rollout = make(devops_actor, serving)

    with pytest.raises(InvalidInput) as err:
        start_rollout(actor=devops_actor, rollout_id=rollout.pk, reason="  ")

    assert err.value.field == "reason"
    rollout.refresh_from_db()
    assert rollout.state == Rollout.State.DRAFT


def test_transition_requires_devops(serving, devops_actor, viewer_user):
    rollout = make(devops_actor, serving)

    with pytest.raises(PermissionDenied):
        start_rollout(actor=Actor.of(viewer_user), rollout_id=rollout.pk, reason="sneaky")


def test_second_active_rollout_on_a_deployment_is_refused_atomically(serving, devops_actor):
    deployment, base, cand = serving
    first = make(devops_actor, serving)
    second = make(devops_actor, serving, strategy="canary", steps=[{"percent": 20}])
    start_rollout(actor=devops_actor, rollout_id=first.pk, reason="go")

    with pytest.raises(IllegalTransition):
        start_rollout(actor=devops_actor, rollout_id=second.pk, reason="also go")

    second.refresh_from_db()
    assert second.state == Rollout.State.DRAFT
    assert split(deployment) == {(base.pk, 90, "control"), (cand.pk, 10, "canary")}


def test_advance_moves_to_the_next_step_and_promotes_past_the_last(serving, devops_actor):
    deployment, _, cand = serving
    rollout = make(devops_actor, serving)
    start_rollout(actor=devops_actor, rollout_id=rollout.pk, reason="go")

    rollout = advance_rollout(actor=devops_actor, rollout_id=rollout.pk, reason="step ok")
    at_50 = split(deployment)
    advance_rollout(actor=devops_actor, rollout_id=rollout.pk, reason="step ok")
    rollout = advance_rollout(actor=devops_actor, rollout_id=rollout.pk, reason="step ok")

    assert (cand.pk, 50, "canary") in at_50
    assert rollout.state == Rollout.State.PROMOTED
    assert split(deployment) == {(cand.pk, 100, "control")}


def test_advance_from_a_stale_step_is_refused(serving, devops_actor):
    rollout = make(devops_actor, serving)
    start_rollout(actor=devops_actor, rollout_id=rollout.pk, reason="go")
    advance_rollout(actor=devops_actor, rollout_id=rollout.pk, reason="step ok", from_step=0)

    with pytest.raises(IllegalTransition):
        advance_rollout(actor=devops_actor, rollout_id=rollout.pk, reason="step ok", from_step=0)

    rollout.refresh_from_db()
    assert rollout.current_step == 1
