import pytest

from feedback.models import Alert
from registry.services import record_heartbeat
from registry.services.probes import ProbeOptions, probe_deployment, save_golden_set
from tests.registry.model_servers import model_servers_fixture  # noqa: F401


@pytest.fixture
def fleet(traffic_allocation, model_servers, system_actor):
    save_golden_set(
        actor=system_actor,
        registered_model=traffic_allocation.model_version.registered_model,
        name="g",
        inputs=[{"name": "one", "input": {"x": 1}}],
    )
    a1, a2, b = model_servers("A", "A", "B")

    def serve(*urls):
        for i, url in enumerate(urls):
            record_heartbeat(
                deployment=traffic_allocation.deployment,
                instance_id=f"pod-{i}",
                url=url,
                sha256=traffic_allocation.model_version.sha256,
            )

    def probe():
        return probe_deployment(
            deployment=traffic_allocation.deployment,
            actor=system_actor,
            options=ProbeOptions(timeout=0.3),
        )

    return traffic_allocation.deployment, serve, probe, (a1.url, a2.url, b.url)


def probe_alerts(deployment):
    return Alert.objects.filter(
        rule__key="replica-probe-mismatch", target_key=f"deployment:{deployment.pk}"
    )


def test_divergent_replica_fires_one_alert_while_it_lasts(fleet):
    deployment, serve, probe, (a1, a2, b) = fleet
    serve(a1, a2, b)

    probe()
    probe()

    alert = probe_alerts(deployment).get()
    assert alert.state == Alert.State.FIRING
    assert alert.deployment == deployment
    assert alert.evidence["bad_replicas"] == {"pod-2": "divergent"}


def test_alert_resolves_when_replicas_agree_again(fleet):
    deployment, serve, probe, (a1, a2, b) = fleet
    serve(a1, a2, b)
    probe()
    serve(a1, a2, a1)

    probe()

    assert probe_alerts(deployment).get().state == Alert.State.RESOLVED


def test_agreeing_replicas_fire_no_alert(fleet):
    deployment, serve, probe, (a1, a2, _) = fleet
    serve(a1, a2)

    probe()

    assert not probe_alerts(deployment).exists()
