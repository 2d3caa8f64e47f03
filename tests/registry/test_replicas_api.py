import hashlib
import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from registry.models import AuditEvent, ConsistencyCheck, GoldenSet, Replica
from registry.services import record_heartbeat
from registry.services.probes import ProbeOptions, probe_deployment, save_golden_set
from tests.registry.model_servers import model_servers_fixture  # noqa: F401

URL = "/api/v1/replicas/heartbeat"


@pytest.fixture
def agent(devops_user, token_client):
    """A sidecar's client: a token that may only send heartbeats."""
    return token_client(devops_user, "replica:write")


@pytest.fixture
def allocation(traffic_allocation_factory):
    return traffic_allocation_factory()


def beat(allocation, **overrides):
    mv = allocation.model_version
    return {
        "deployment": allocation.deployment.pk,
        "instance_id": "pod-a",
        "host": "10.0.0.7",
        "url": "http://10.0.0.7:8080",
        "model": mv.registered_model.name,
        "version": mv.version,
        "started_at": "2026-01-01T00:00:00Z",
        **overrides,
    }


# --- heartbeats ---


def test_heartbeat_registers_an_unknown_replica(agent, allocation):
    response = agent.post(URL, beat(allocation), format="json")

    assert response.status_code == 200
    replica = Replica.objects.get(deployment=allocation.deployment, instance_id="pod-a")
    assert replica.reported_version == allocation.model_version
    assert replica.reported_sha256 == allocation.model_version.sha256
    assert replica.url == "http://10.0.0.7:8080"
    assert response.json()["replica"] == replica.pk
    assert response.json()["mismatched"] is False


def test_heartbeat_updates_the_same_replica_row(agent, allocation):
    agent.post(URL, beat(allocation, host="old"), format="json")

    agent.post(URL, beat(allocation, host="new"), format="json")

    assert list(Replica.objects.values_list("host", flat=True)) == ["new"]


def test_heartbeat_accepts_app_slug_and_deployment_name(agent, allocation):
    ref = f"{allocation.deployment.application.slug}/{allocation.deployment.name}"

    response = agent.post(URL, beat(allocation, deployment=ref), format="json")

    assert response.status_code == 200
    assert response.json()["deployment"] == allocation.deployment.pk


def test_heartbeat_with_sha256_only_resolves_the_version(agent, allocation):
    body = beat(allocation, sha256=allocation.model_version.sha256.upper())
    del body["model"], body["version"]

    response = agent.post(URL, body, format="json")

    assert response.status_code == 200
    replica = Replica.objects.get()
    assert replica.reported_version == allocation.model_version
    assert replica.reported_sha256 == allocation.model_version.sha256


def test_heartbeat_with_unallocated_artifact_is_flagged_mismatched(agent, allocation):
    other = hashlib.sha256(b"yesterday's model").hexdigest()

    response = agent.post(URL, beat(allocation, sha256=other), format="json")

    assert response.status_code == 200
    assert response.json()["mismatched"] is True
    assert response.json()["expected_sha256"] == [allocation.model_version.sha256]
    assert Replica.objects.get().reported_sha256 == other


def _queries_of_a_heartbeat(agent, allocation, sha256_only: bool) -> int:
    from django.test.utils import CaptureQueriesContext

    body = beat(allocation, sha256=allocation.model_version.sha256)
    if sha256_only:
        del body["model"], body["version"]
    agent.post(URL, body, format="json")  # the replica is known from now on
    with CaptureQueriesContext(connection) as ctx:
        response = agent.post(URL, body, format="json")
    assert response.status_code == 200
    return len(ctx.captured_queries)


@pytest.mark.parametrize("sha256_only", [True, False])
def test_a_heartbeat_of_an_allocated_version_costs_the_same_queries_however_many_serve(
    agent, traffic_allocation_factory, model_version_factory, sha256_only
):
    one = traffic_allocation_factory(weight=100)
    split = traffic_allocation_factory(weight=50)
    for weight in (30, 20):
        traffic_allocation_factory(
            deployment=split.deployment, weight=weight, role="treatment",
            model_version=model_version_factory(registered_model=split.model_version.registered_model),
        )  # fmt: skip

    counts = [_queries_of_a_heartbeat(agent, a, sha256_only) for a in (one, split)]

    # auth and throttle read the cache; the deployment, its allocated versions (the reported
    # one among them), then the locked read and upsert of the replica in a savepoint
    assert counts == [6, 6]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"deployment": 999_999}, "deployment"),
        ({"deployment": "nope/nothing"}, "deployment"),
        ({"deployment": "no-slash"}, "deployment"),
        ({"deployment": True}, "deployment"),
        ({"deployment": 2**70}, "deployment"),
        ({"sha256": "abc"}, "sha256"),
        ({"sha256": "z" * 64}, "sha256"),
        ({"version": 999}, "version"),
        ({"model": None}, "model"),
        ({"version": None}, "version"),
        ({"instance_id": ""}, "instance_id"),
        ({"url": "ftp://10.0.0.7/"}, "url"),
        ({"started_at": "yesterday"}, "started_at"),
        ({"extra": 1}, "extra"),
    ],
)
def test_heartbeat_rejects_bad_input_field_by_field(agent, allocation, changes, field):
    body = {k: v for k, v in beat(allocation, **changes).items() if v is not None}

    response = agent.post(URL, body, format="json")

    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]
    assert not Replica.objects.exists()


def test_heartbeat_without_version_or_sha256_is_refused(agent, allocation):
    body = beat(allocation)
    del body["model"], body["version"]

    response = agent.post(URL, body, format="json")

    assert response.status_code == 400
    assert "sha256" in response.json()["error"]["fields"]


def test_heartbeat_needs_credentials(client, allocation):
    response = client.post(URL, beat(allocation), content_type="application/json")

    assert response.status_code == 401
    assert not Replica.objects.exists()


@pytest.mark.parametrize("scope", ["read", "registry:write", "feedback:write"])
def test_heartbeat_needs_replica_write_scope(token_client, devops_user, allocation, scope):
    response = token_client(devops_user, scope).post(URL, beat(allocation), format="json")

    assert response.status_code == 403
    assert not Replica.objects.exists()


def test_heartbeat_needs_the_devops_role(token_client, product_user, allocation):
    response = token_client(product_user, "replica:write").post(
        URL, beat(allocation), format="json"
    )

    assert response.status_code == 403


@pytest.mark.skipif(
    connection.vendor == "sqlite", reason="SQLite locks the whole table: the race needs PostgreSQL"
)
@pytest.mark.django_db(transaction=True)
def test_concurrent_heartbeats_do_not_race(traffic_allocation_factory):
    allocation = traffic_allocation_factory()
    deployment, sha = allocation.deployment, allocation.model_version.sha256
    errors = []
    start = threading.Barrier(16)

    def sidecar(i):
        try:
            start.wait()
            for n in range(5):  # each replica beats 5 times; pairs share an instance id
                record_heartbeat(
                    deployment=deployment, instance_id=f"pod-{i // 2}", host=f"h{n}", sha256=sha
                )
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=sidecar, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    assert Replica.objects.filter(deployment=deployment).count() == 8
    assert set(Replica.objects.values_list("host", flat=True)) == {"h4"}


# --- golden sets ---


GOLDEN = {
    "name": "smoke",
    "rule": "tolerance",
    "abs_tolerance": 0.01,
    "inputs": [
        {"name": "one", "input": {"x": 1}, "expected": {"score": 0.5}},
        {"name": "two", "input": {"x": 2}},
    ],
}


def test_golden_set_create_by_devops(token_client, devops_user, registered_model):
    client = token_client(devops_user, "registry:write", "read")

    response = client.post(
        "/api/v1/golden-sets/", {**GOLDEN, "model": registered_model.name}, format="json"
    )

    assert response.status_code == 201, response.json()
    gs = GoldenSet.objects.get()
    assert (gs.registered_model, gs.rule, len(gs.inputs)) == (registered_model, "tolerance", 2)
    assert gs.inputs[1]["expected"] is None
    assert AuditEvent.objects.filter(kind="golden_set.created").exists()


def test_golden_set_create_refused_to_product_role(token_client, product_user, registered_model):
    client = token_client(product_user, "registry:write")

    response = client.post(
        "/api/v1/golden-sets/", {**GOLDEN, "model": registered_model.name}, format="json"
    )

    assert response.status_code == 403
    assert not GoldenSet.objects.exists()


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"inputs": []}, "inputs"),
        ({"inputs": [{"name": "a"}]}, "inputs.0.input"),
        ({"rule": "top_k"}, "top_k"),
        ({"min_overlap": 2}, "min_overlap"),
        ({"model": "no-such-model"}, "model"),
        ({"abs_tolerance": "0.1"}, "abs_tolerance"),
    ],
)
def test_golden_set_create_rejects_bad_input(
    token_client, devops_user, registered_model, changes, field
):
    client = token_client(devops_user, "registry:write")
    body = {**GOLDEN, "model": registered_model.name, **changes}

    response = client.post("/api/v1/golden-sets/", body, format="json")

    assert response.status_code == 400
    assert any(name.startswith(field) for name in response.json()["error"]["fields"])
    assert not GoldenSet.objects.exists()


def test_golden_set_duplicate_name_is_a_conflict(token_client, devops_user, registered_model):
    client = token_client(devops_user, "registry:write")
    body = {**GOLDEN, "model": registered_model.name}
    client.post("/api/v1/golden-sets/", body, format="json")

    response = client.post("/api/v1/golden-sets/", body, format="json")

    assert response.status_code == 409
    assert GoldenSet.objects.count() == 1


def test_golden_set_patch_changes_only_given_fields(
    token_client, devops_user, registered_model, system_actor
):
    gs = save_golden_set(
        actor=system_actor, registered_model=registered_model, name="g", inputs=GOLDEN["inputs"]
    )
    client = token_client(devops_user, "registry:write")

    response = client.patch(f"/api/v1/golden-sets/{gs.pk}/", {"active": False}, format="json")

    assert response.status_code == 200
    gs.refresh_from_db()
    assert (gs.active, gs.name, len(gs.inputs)) == (False, "g", 2)


def test_golden_set_delete(token_client, devops_user, registered_model, system_actor):
    gs = save_golden_set(
        actor=system_actor, registered_model=registered_model, name="g", inputs=GOLDEN["inputs"]
    )

    response = token_client(devops_user, "registry:write").delete(f"/api/v1/golden-sets/{gs.pk}/")

    assert response.status_code == 204
    assert not GoldenSet.objects.exists()


def test_golden_sets_are_readable_with_read_scope(
    token_client, viewer_user, registered_model, system_actor
):
    save_golden_set(
        actor=system_actor, registered_model=registered_model, name="g", inputs=GOLDEN["inputs"]
    )

    response = token_client(viewer_user, "read").get(
        "/api/v1/golden-sets/", {"model": registered_model.name}
    )

    assert response.status_code == 200
    assert [g["name"] for g in response.json()["results"]] == ["g"]


# --- consistency checks ---


def test_consistency_checks_list_shows_per_replica_verdicts(
    token_client, viewer_user, allocation, model_servers, system_actor
):
    save_golden_set(
        actor=system_actor,
        registered_model=allocation.model_version.registered_model,
        name="g",
        inputs=[{"name": "one", "input": {"x": 1}}],
    )
    servers = model_servers("A", "A", "B")
    for i, server in enumerate(servers):
        record_heartbeat(
            deployment=allocation.deployment,
            instance_id=f"pod-{i}",
            url=server.url,
            sha256=allocation.model_version.sha256,
        )
    probe_deployment(
        deployment=allocation.deployment, actor=system_actor, options=ProbeOptions(timeout=0.3)
    )

    response = token_client(viewer_user, "read").get(
        "/api/v1/consistency-checks/", {"deployment": allocation.deployment.pk}
    )

    assert response.status_code == 200
    (check,) = response.json()["results"]
    assert check["outcome"] == ConsistencyCheck.Outcome.INCONSISTENT
    verdicts = {r["instance_id"]: r["verdict"] for r in check["results"]}
    assert verdicts == {"pod-0": "consistent", "pod-1": "consistent", "pod-2": "divergent"}
    assert check["results"][2]["first_difference"]["input"] == "g/one"


def test_consistency_checks_need_authentication(client):
    assert client.get("/api/v1/consistency-checks/").status_code == 401


def test_stale_heartbeat_is_still_accepted(agent, allocation):
    # a replica coming back after a long silence simply becomes fresh again
    old = timezone.now() - timedelta(days=2)
    record_heartbeat(
        deployment=allocation.deployment,
        instance_id="pod-a",
        sha256=allocation.model_version.sha256,
        at=old,
    )

    agent.post(URL, beat(allocation), format="json")

    assert Replica.objects.get().last_heartbeat_at > old


def test_status_endpoint_counts_the_divergent_replica(
    token_client, viewer_user, allocation, model_servers, system_actor
):
    save_golden_set(
        actor=system_actor,
        registered_model=allocation.model_version.registered_model,
        name="g",
        inputs=[{"name": "one", "input": {"x": 1}}],
    )
    for i, server in enumerate(model_servers("A", "A", "B")):
        record_heartbeat(
            deployment=allocation.deployment,
            instance_id=f"pod-{i}",
            url=server.url,
            model_version=allocation.model_version,
        )
    probe_deployment(
        deployment=allocation.deployment, actor=system_actor, options=ProbeOptions(timeout=0.3)
    )

    response = token_client(viewer_user, "read").get(
        f"/api/v1/applications/{allocation.deployment.application.slug}/status"
    )

    replicas = response.json()["deployments"][0]["replicas"]
    assert (replicas["reporting"], replicas["inconsistent"]) == (3, 1)
    assert replicas["last_check_outcome"] == "inconsistent"
