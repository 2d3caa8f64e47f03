"""A small but complete fleet for the page tests: rollouts started through the services,
so allocations and audit events are real, plus hourly quality rollups for both arms."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from feedback.models import QualityRollup
from registry.models import AuditEvent, Rollout, TrafficAllocation
from registry.roles import Actor
from registry.services import create_rollout, start_rollout
from tests.factories import registry as rf

HOURS = 36


def build_fleet(apps: int = 2, versions: int = 2, replicas: int = 3, start: int = 0) -> list:
    """`apps` applications, each with one model of `versions` versions, a running canary
    from the oldest to the newest, `replicas` replicas (the last one stale) and rollups."""
    actor = Actor.system("tests")
    now = timezone.now()
    created = []
    for i in range(start, start + apps):
        app = rf.ApplicationFactory(
            slug=f"shop-{i:03d}", name=f"Shop search {i}", team=f"team-{i % 3}"
        )
        model = rf.RegisteredModelFactory(name=f"ranker-{i:03d}")
        mvs = [
            rf.ModelVersionFactory(
                registered_model=model, version=n + 1, trained_at=now - timedelta(hours=50 - n)
            )
            for n in range(versions)
        ]
        dep = rf.DeploymentFactory(application=app, name="prod", desired_replicas=replicas)
        rf.TrafficAllocationFactory(
            deployment=dep, model_version=mvs[0], valid_from=now - timedelta(days=3)
        )
        for n in range(replicas):
            rf.ReplicaFactory(
                deployment=dep,
                instance_id=f"pod-{n}",
                reported_version=mvs[0],
                reported_sha256=mvs[0].sha256,
                last_heartbeat_at=now - (timedelta(hours=2) if n == replicas - 1 else timedelta()),
            )
        rollout = create_rollout(
            actor=actor,
            deployment=dep,
            strategy=Rollout.Strategy.GRADUAL,
            baseline_version=mvs[0],
            candidate_version=mvs[-1],
            steps=[{"percent": 10}, {"percent": 50}, {"percent": 100}],
            guardrails=[{"metric": "conversion_rate", "max_drop": 0.05, "min_sample": 100}],
        )
        start_rollout(actor=actor, rollout_id=rollout.pk, reason="nightly retrain looks good")
        _started_hours_ago(rollout, dep, 30, now)
        _rollups(app, mvs[0], mvs[-1], now)
        created.append((app, dep, model, mvs, rollout))
    return created


def _started_hours_ago(rollout, dep, hours: int, now) -> None:
    """Move the start back in time, as if it had happened `hours` ago (data setup only)."""
    then = now - timedelta(hours=hours)
    Rollout.objects.filter(pk=rollout.pk).update(started_at=then, step_started_at=then)
    TrafficAllocation.objects.filter(deployment=dep, valid_to__isnull=False).update(valid_to=then)
    TrafficAllocation.objects.filter(deployment=dep, valid_to__isnull=True).update(valid_from=then)
    AuditEvent.objects.filter(application=dep.application).update(at=then)


def _rollups(app, baseline, candidate, now) -> None:
    hour0 = now.replace(minute=0, second=0, microsecond=0)
    rows = []
    for h in range(HOURS):
        hour = hour0 - timedelta(hours=h)
        for mv, impressions, conv, correct in ((baseline, 900, 45, 80), (candidate, 100, 6, 83)):
            rows += [
                QualityRollup(application=app, model_version=mv, kind="impression", hour=hour,
                              count=impressions),
                QualityRollup(application=app, model_version=mv, kind="conversion", hour=hour,
                              count=conv, sum=conv * 20.0, sum_sq=conv * 400.0),
                QualityRollup(application=app, model_version=mv, kind="bad_recommendation",
                              hour=hour, count=impressions // 50),
                QualityRollup(application=app, model_version=mv, kind="label", hour=hour,
                              count=100, correct=correct, labelled=100),
            ]  # fmt: skip
    QualityRollup.objects.bulk_create(rows)
