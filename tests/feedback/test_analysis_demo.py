"""End to end on the demo fleet: feedback goes in through ingestion, the beat job decides."""

import uuid

from django.db.models import Count, Max
from django.utils import timezone

from feedback.rollout_automation import evaluate_running_rollouts
from registry.demo import seed_demo
from registry.models import AuditEvent, Deployment, ModelVersion, Rollout
from registry.roles import Actor
from registry.services import create_rollout, start_rollout

OPERATOR = Actor.system("demo-operator")
STEPS = [
    {"percent": 25, "min_duration_s": 0, "min_sample": 200},
    {"percent": 50, "min_duration_s": 0, "min_sample": 200},
    {"percent": 100, "min_duration_s": 0, "min_sample": 200},
]
GUARDS = [{"metric": "conversion_rate", "max_drop": 0.05, "min_sample": 200}]


def demo_gradual_rollout():
    """A gradual rollout of a new version on a demo deployment that has none running.

    Its application has one deployment, so a client's `role` names one version.
    """
    deployment = (
        Deployment.objects.annotate(siblings=Count("application__deployments"))
        .filter(siblings=1)
        .exclude(rollouts__state__in=Rollout.ACTIVE_STATES)
        .order_by("pk")
        .first()
    )
    control = deployment.allocations.get(valid_to__isnull=True, role="control").model_version
    last = control.registered_model.versions.aggregate(m=Max("version"))["m"]
    candidate = ModelVersion.objects.create(
        registered_model=control.registered_model,
        version=last + 1,
        artifact_uri="s3://demo/candidate.onnx",
        sha256=uuid.uuid4().hex * 2,
        size_bytes=1,
        trained_at=timezone.now(),
    )
    rollout = create_rollout(
        actor=OPERATOR,
        deployment=deployment,
        strategy="gradual",
        baseline_version=control,
        candidate_version=candidate,
        steps=STEPS,
        guardrails=GUARDS,
    )
    return start_rollout(actor=OPERATOR, rollout_id=rollout.pk, reason="demo")


def arm_events(slug, role, *, impressions, conversions):
    """What the application's clients send: the arm's role, not the version."""
    at = timezone.now().isoformat()
    return [
        {
            "event_id": str(uuid.uuid4()),
            "occurred_at": at,
            "application": slug,
            "role": role,
            "kind": "conversion" if i < conversions else "impression",
        }
        for i in range(impressions + conversions)
    ]


def test_gradual_rollout_on_the_demo_fleet_advances_on_good_data_and_pauses_on_bad(ingest):
    seed_demo()
    rollout = demo_gradual_rollout()
    slug = rollout.deployment.application.slug

    # good data at 25 %: both arms convert at 10 %
    ingest(
        arm_events(slug, "control", impressions=600, conversions=60)
        + arm_events(slug, "canary", impressions=200, conversions=20)
    )
    [good] = [o for o in evaluate_running_rollouts() if o.rollout_id == rollout.pk]

    rollout.refresh_from_db()
    assert good.action == "advanced", good.reason
    assert (rollout.state, rollout.current_percent) == ("running", 50)

    # bad data at 50 %: the candidate converts at 2 %
    ingest(
        arm_events(slug, "control", impressions=1000, conversions=100)
        + arm_events(slug, "canary", impressions=1000, conversions=20)
    )
    [bad] = [o for o in evaluate_running_rollouts() if o.rollout_id == rollout.pk]

    rollout.refresh_from_db()
    assert bad.action == "paused"
    assert rollout.state == "paused"
    event = AuditEvent.objects.filter(kind="rollout.paused", target_id=str(rollout.pk)).get()
    assert event.reason.startswith("guardrail failed: conversion_rate")
    assert event.actor_label == "rollout-automation"
