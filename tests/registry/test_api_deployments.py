"""Deployments with their allocations; changing the traffic split and its bad inputs."""

from datetime import timedelta

import pytest
from django.utils import timezone

from registry.models import AuditEvent, Deployment, TrafficAllocation
from registry.services import AllocationSpec, set_allocation


@pytest.fixture
def writer(token_client, devops_user):
    return token_client(devops_user, "read", "registry:write")


@pytest.fixture
def reader(token_client, viewer_user):
    return token_client(viewer_user, "read")


@pytest.fixture
def serving(deployment, model_version_factory, system_actor):
    """A deployment serving v1 at 100 %, and a v2 of the same model ready to roll out."""
    v1 = model_version_factory()
    v2 = model_version_factory(registered_model=v1.registered_model)
    set_allocation(actor=system_actor, deployment=deployment, allocations=[AllocationSpec(v1, 100)])
    return deployment, v1, v2


def alloc(mv, weight, role="control"):
    return {
        "model": mv.registered_model.name,
        "version": mv.version,
        "weight": weight,
        "role": role,
    }


def allocation_url(deployment):
    return f"/api/v1/deployments/{deployment.pk}/allocation"


def current_split(deployment):
    rows = deployment.allocations.filter(valid_to__isnull=True)
    return sorted((r.model_version_id, r.weight, r.role) for r in rows)


def test_deployments_list_nests_current_allocations(reader, serving):
    deployment, v1, _ = serving

    body = reader.get("/api/v1/deployments/").json()

    row = body["results"][0]
    assert row["application"] == deployment.application.slug
    assert row["allocations"] == [
        {
            "model": v1.registered_model.name,
            "version": v1.version,
            "version_id": v1.pk,
            "weight": 100,
            "role": "control",
            "valid_from": row["allocations"][0]["valid_from"],
            "valid_to": None,
        }
    ]


def test_deployments_list_filters_by_application(reader, deployment_factory):
    wanted = deployment_factory()
    deployment_factory()

    body = reader.get(f"/api/v1/deployments/?application={wanted.application.slug}").json()

    assert [d["id"] for d in body["results"]] == [wanted.pk]


def test_deployment_create_by_devops(writer, application):
    body = {
        "application": application.slug,
        "name": "prod-eu",
        "endpoint_url": "https://ranker.internal/predict",
        "desired_replicas": 4,
        "heartbeat_timeout_seconds": 60,
    }

    response = writer.post("/api/v1/deployments/", body, format="json")

    assert response.status_code == 201
    deployment = Deployment.objects.get(name="prod-eu")
    assert deployment.heartbeat_timeout == timedelta(seconds=60)
    assert response.json()["allocations"] == []
    assert AuditEvent.objects.filter(kind="deployment.created", application=application).exists()


def test_deployment_create_for_unknown_application_is_field_level_400(writer):
    response = writer.post(
        "/api/v1/deployments/", {"application": "ghost", "name": "prod"}, format="json"
    )

    assert response.status_code == 400
    assert "application" in response.json()["error"]["fields"]
    assert not Deployment.objects.exists()


def test_deployment_create_duplicate_name_is_409(writer, deployment):
    body = {"application": deployment.application.slug, "name": deployment.name}

    response = writer.post("/api/v1/deployments/", body, format="json")

    assert response.status_code == 409


def test_set_allocation_starts_a_canary_and_audits(writer, serving):
    deployment, v1, v2 = serving

    response = writer.put(
        allocation_url(deployment),
        {"allocations": [alloc(v1, 95), alloc(v2, 5, "canary")], "reason": "canary 5%"},
        format="json",
    )

    assert response.status_code == 200
    assert sorted(a["weight"] for a in response.json()["allocations"]) == [5, 95]
    assert current_split(deployment) == sorted([(v1.pk, 95, "control"), (v2.pk, 5, "canary")])
    event = AuditEvent.objects.get(kind="allocation.changed", reason="canary 5%")
    assert event.before == [alloc(v1, 100)]
    assert event.actor_label == "dora-devops (token test)"


def test_set_allocation_shadow_rows_do_not_count_towards_100(writer, serving):
    deployment, v1, v2 = serving

    response = writer.put(
        allocation_url(deployment),
        {"allocations": [alloc(v1, 100), alloc(v2, 0, "shadow")]},
        format="json",
    )

    assert response.status_code == 200


def test_set_allocation_weights_not_summing_to_100_is_400_and_changes_nothing(writer, serving):
    deployment, v1, v2 = serving
    before = current_split(deployment)

    response = writer.put(
        allocation_url(deployment),
        {"allocations": [alloc(v1, 90), alloc(v2, 5, "canary")]},
        format="json",
    )

    assert response.status_code == 400
    assert "allocations" in response.json()["error"]["fields"]
    assert current_split(deployment) == before
    assert TrafficAllocation.objects.count() == 1
    assert AuditEvent.objects.filter(kind="allocation.changed").count() == 1  # the fixture's


def test_set_allocation_unknown_version_is_field_level_400(writer, serving):
    deployment, v1, _ = serving
    ghost = {"model": v1.registered_model.name, "version": 999, "weight": 10, "role": "canary"}

    response = writer.put(
        allocation_url(deployment), {"allocations": [alloc(v1, 90), ghost]}, format="json"
    )

    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == ["allocations[1].version"]
    assert TrafficAllocation.objects.count() == 1


def test_set_allocation_unknown_model_is_400_not_404(writer, serving):
    deployment, _, _ = serving
    ghost = {"model": "no-such-model", "version": 1, "weight": 100}

    response = writer.put(allocation_url(deployment), {"allocations": [ghost]}, format="json")

    assert response.status_code == 400
    assert "allocations[0].version" in response.json()["error"]["fields"]


@pytest.mark.parametrize(
    "bad",
    [
        {"allocations": []},
        {"allocations": [{"model": "m", "version": 1, "weight": 101}]},
        {"allocations": [{"model": "m", "version": 1, "weight": "100"}]},
        {"allocations": [{"model": "m", "version": 1, "weight": 100, "role": "boss"}]},
        {"allocations": [{"model": "m", "version": 1, "weight": 100, "extra": 1}]},
        {"allocations": [], "note": "x"},
    ],
)
def test_set_allocation_rejects_malformed_body(writer, serving, bad):
    deployment, _, _ = serving

    response = writer.put(allocation_url(deployment), bad, format="json")

    assert response.status_code == 400
    assert TrafficAllocation.objects.count() == 1


def test_set_allocation_repeated_version_is_400(writer, serving):
    deployment, v1, _ = serving

    response = writer.put(
        allocation_url(deployment), {"allocations": [alloc(v1, 50), alloc(v1, 50)]}, format="json"
    )

    assert response.status_code == 400
    assert TrafficAllocation.objects.count() == 1


def test_set_allocation_of_unknown_deployment_is_404(writer, serving):
    _, v1, _ = serving

    response = writer.put(
        "/api/v1/deployments/999999/allocation", {"allocations": [alloc(v1, 100)]}, format="json"
    )

    assert response.status_code == 404


def test_get_allocation_at_a_past_instant(reader, serving, system_actor):
    deployment, v1, v2 = serving
    before_change = timezone.now()
    set_allocation(
        actor=system_actor,
        deployment=deployment,
        allocations=[AllocationSpec(v1, 50), AllocationSpec(v2, 50, "treatment")],
    )

    past = reader.get(allocation_url(deployment), {"at": before_change.isoformat()}).json()
    now = reader.get(allocation_url(deployment)).json()

    assert [a["version"] for a in past["allocations"]] == [v1.version]
    assert sorted(a["weight"] for a in now["allocations"]) == [50, 50]


def test_get_allocation_with_bad_instant_is_400(reader, deployment):
    response = reader.get(allocation_url(deployment), {"at": "last tuesday"})

    assert response.status_code == 400
    assert "at" in response.json()["error"]["fields"]
