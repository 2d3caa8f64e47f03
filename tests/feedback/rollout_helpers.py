"""Helpers for rollout analysis tests: a started rollout whose clock is set back, and rollups."""

from datetime import timedelta

from django.utils import timezone

from feedback.models import QualityRollup
from registry.models import Rollout
from registry.roles import Actor
from registry.services import AllocationSpec, create_rollout, set_allocation, start_rollout

SYSTEM = Actor.system("tests")


def hour_ago(n: int):
    return timezone.now().replace(minute=0, second=0, microsecond=0) - timedelta(hours=n)


def started_rollout(
    deployment, base, cand, *, strategy="gradual", steps=None, guardrails=None, hours_ago=3, **kw
):
    """A running rollout that started (and entered its current step) `hours_ago` whole hours ago."""
    set_allocation(actor=SYSTEM, deployment=deployment, allocations=[AllocationSpec(base, 100)])
    rollout = create_rollout(
        actor=SYSTEM,
        deployment=deployment,
        strategy=strategy,
        baseline_version=base,
        candidate_version=cand,
        steps=steps,
        guardrails=guardrails,
        **kw,
    )
    start_rollout(actor=SYSTEM, rollout_id=rollout.pk, reason="test start")
    at = hour_ago(hours_ago)
    Rollout.objects.filter(pk=rollout.pk).update(started_at=at, step_started_at=at)
    return Rollout.objects.select_related(
        "deployment__application",
        "baseline_version__registered_model",
        "candidate_version__registered_model",
    ).get(pk=rollout.pk)


def rollup(application, version, kind, hour, count, total=0.0, total_sq=0.0, correct=0, labelled=0):
    return QualityRollup.objects.create(
        application=application,
        model_version=version,
        kind=kind,
        hour=hour,
        count=count,
        sum=total,
        sum_sq=total_sq,
        correct=correct,
        labelled=labelled,
    )


def traffic(rollout, *, hours, base=(0, 0), cand=(0, 0)):
    """Each of the last `hours` whole hours: (impressions, conversions) per arm."""
    app = rollout.deployment.application
    for h in range(hours, 0, -1):
        for version, (impressions, conversions) in (
            (rollout.baseline_version, base),
            (rollout.candidate_version, cand),
        ):
            if impressions:
                rollup(app, version, "impression", hour_ago(h), impressions)
            if conversions:
                rollup(app, version, "conversion", hour_ago(h), conversions)
