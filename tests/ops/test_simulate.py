"""The live demo: feedback per arm, a degraded candidate, heartbeats with one drifting replica."""

import pytest
from django.core.management import call_command

from dashboard.celery import app as celery_app
from dashboard.simulation import DRIFT_AFTER_S, Api, Simulator
from feedback.models import FeedbackEvent, FeedbackReport
from registry.models import ApiToken, Replica, TrafficAllocation

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def demo(
    monkeypatch, user_factory, traffic_allocation_factory, model_version_factory, replica_factory
):
    """Demo users and one application: control 90 % and a canary 10 %, two replicas."""
    monkeypatch.setitem(celery_app.conf, "task_always_eager", True)  # ingest in the server
    devops = user_factory(username="devops", roles=["devops"])
    product = user_factory(username="product", roles=["product"])
    control = traffic_allocation_factory(
        weight=90, deployment__application__slug="shop", model_version__registered_model__name="m"
    )
    canary = model_version_factory(registered_model=control.model_version.registered_model)
    traffic_allocation_factory(
        deployment=control.deployment,
        model_version=canary,
        weight=10,
        role=TrafficAllocation.Role.CANARY,
    )
    for name in ("pod-a", "pod-b"):
        replica_factory(
            deployment=control.deployment,
            instance_id=name,
            reported_sha256=control.model_version.sha256,
        )
    return devops, product, control, canary


def test_a_tick_sends_feedback_per_arm_and_heartbeats_then_one_replica_drifts(
    live_server, demo, make_token
):
    devops, product, control, canary = demo
    now = [0.0]
    sim = Simulator(
        Api(live_server.url),
        read_token=make_token(product, "read"),
        feedback_token=make_token(product, "feedback:write", "read"),
        replica_token=make_token(devops, "replica:write", "read"),
        rate=300,
        seed=7,
        clock=lambda: now[0],
    )

    sim.tick()

    assert sim.stats.errors == 0, sim.stats.last_error
    by_version = {
        v: FeedbackEvent.objects.filter(model_version=v, kind="impression").count()
        for v in (control.model_version, canary)
    }
    assert by_version[control.model_version] > 5 * by_version[canary] > 0
    assert sim.stats.degraded.endswith(f":{canary.version}")
    assert not Replica.objects.exclude(reported_sha256=control.model_version.sha256).exists()

    now[0] = DRIFT_AFTER_S + 1
    sim.stats.ticks = 3  # heartbeats go out every third tick
    sim.tick()

    drifted = Replica.objects.exclude(reported_sha256=control.model_version.sha256)
    assert [r.instance_id for r in drifted] == ["pod-a"]

    sim.file_report()
    report = FeedbackReport.objects.get()
    assert (report.model_version, report.state) == (canary, "open")


def test_the_command_runs_for_its_duration_and_revokes_its_tokens(live_server, demo):
    call_command(
        "simulate", "--url", live_server.url, "--duration", "1", "--interval", "0.3", "--rate", "20"
    )

    assert FeedbackEvent.objects.exists()
    tokens = ApiToken.objects.filter(name__startswith="simulate")
    assert tokens.count() == 2
    assert not tokens.filter(revoked_at__isnull=True).exists()
