from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from registry.models import ConsistencyCheck
from registry.services import record_heartbeat
from registry.services.probes import save_golden_set
from tests.registry.model_servers import model_servers_fixture  # noqa: F401


@pytest.fixture
def fleet(traffic_allocation_factory, model_servers, system_actor):
    allocation = traffic_allocation_factory()
    save_golden_set(
        actor=system_actor,
        registered_model=allocation.model_version.registered_model,
        name="smoke",
        inputs=[{"name": "one", "input": {"x": 1}}],
    )

    def add(*behaviours):
        for i, server in enumerate(model_servers(*behaviours)):
            record_heartbeat(
                deployment=allocation.deployment,
                instance_id=f"pod-{i}",
                host=f"node-{i}",
                url=server.url,
                model_version=allocation.model_version,
            )
        return allocation.deployment

    return add


def test_probe_replicas_prints_a_row_per_replica(fleet):
    deployment = fleet("A", "A")
    out = StringIO()

    call_command("probe_replicas", str(deployment), "--timeout", "0.3", stdout=out)

    lines = out.getvalue().splitlines()
    assert lines[0].split()[:4] == ["REPLICA", "HOST", "VERDICT", "LATENCY"]
    assert lines[1].split()[:3] == ["pod-0", "node-0", "consistent"]
    assert f"v{deployment.allocations.get().model_version.version}" in lines[1]
    assert "consistent (2 answers)" in out.getvalue()
    assert ConsistencyCheck.objects.get().trigger == "manual"


def test_probe_replicas_fails_with_status_2_when_replicas_disagree(fleet):
    deployment = fleet("A", "A", "B")
    out = StringIO()

    with pytest.raises(CommandError) as error:
        call_command("probe_replicas", str(deployment.pk), "--timeout", "0.3", stdout=out)

    assert error.value.returncode == 2
    odd = next(line for line in out.getvalue().splitlines() if line.startswith("pod-2"))
    assert odd.split()[:3] == ["pod-2", "node-2", "divergent"]
    assert "differs on smoke/one" in odd


def test_probe_replicas_rejects_unknown_deployment():
    with pytest.raises(CommandError, match="no deployment"):
        call_command("probe_replicas", "nope/nothing")
