import pytest

from registry.models import AuditEvent, Rollout, TrafficAllocation
from registry.services import AllocationSpec, set_allocation

URL = "/api/v1/rollouts/"


@pytest.fixture
def serving(deployment, model_version_factory, system_actor):
    base = model_version_factory()
    cand = model_version_factory(registered_model=base.registered_model)
    set_allocation(
        actor=system_actor, deployment=deployment, allocations=[AllocationSpec(base, 100)]
    )
    return deployment, base, cand


@pytest.fixture
def devops_client(token_client, devops_user):
    return token_client(devops_user, "read", "registry:write")


def body(serving, **kw):
    deployment, base, cand = serving
    return {
        "deployment": deployment.pk,
        "strategy": "gradual",
        "baseline_version": base.pk,
        "candidate_version": cand.pk,
        "steps": [{"percent": 10, "min_duration_s": 60, "min_sample": 50}, {"percent": 100}],
        "guardrails": [{"metric": "conversion_rate", "max_drop": 0.05, "min_sample": 50}],
        **kw,
    }


def test_create_rollout_api_makes_a_draft(devops_client, serving):
    response = devops_client.post(URL, body(serving), format="json")

    assert response.status_code == 201, response.json()
    rollout = Rollout.objects.get(pk=response.json()["id"])
    assert rollout.state == "draft"
    assert rollout.steps[1] == {"percent": 100, "min_duration_s": 0, "min_sample": 0}
    assert response.json()["candidate_version"]["version"] == serving[2].version


def test_create_rollout_api_rejects_bad_steps_field_level(devops_client, serving):
    response = devops_client.post(
        URL, body(serving, steps=[{"percent": 50}, {"percent": 10}]), format="json"
    )

    assert response.status_code == 400
    assert "steps[1]" in response.json()["error"]["fields"]
    assert not Rollout.objects.exists()


def test_create_rollout_api_rejects_unknown_deployment(devops_client, serving):
    response = devops_client.post(URL, body(serving, deployment=999999), format="json")

    assert response.status_code == 400
    assert "deployment" in response.json()["error"]["fields"]


def test_create_rollout_api_needs_devops(token_client, product_user, serving):
    client = token_client(product_user, "read", "registry:write")

    response = client.post(URL, body(serving), format="json")

    assert response.status_code == 403
    assert not Rollout.objects.exists()


def test_start_action_moves_traffic_and_audits_the_reason(devops_client, serving, rollout_factory):
    deployment, base, cand = serving
    rollout = rollout_factory(deployment=deployment, baseline_version=base, candidate_version=cand)

    response = devops_client.post(f"{URL}{rollout.pk}/start/", {"reason": "go"}, format="json")

    assert response.status_code == 200, response.json()
    assert response.json()["state"] == "running"
    rollout.refresh_from_db()
    assert rollout.state == "running"
    live = TrafficAllocation.objects.filter(deployment=deployment, valid_to__isnull=True)
    assert {(a.model_version_id, a.weight) for a in live} == {(base.pk, 90), (cand.pk, 10)}
    event = AuditEvent.objects.get(kind="rollout.running")
    assert event.reason == "go"
    assert event.actor_label.startswith("dora-devops")


def test_action_without_reason_is_a_field_level_400(devops_client, rollout_factory):
    rollout = rollout_factory()

    response = devops_client.post(f"{URL}{rollout.pk}/start/", {}, format="json")

    assert response.status_code == 400
    assert "reason" in response.json()["error"]["fields"]
    rollout.refresh_from_db()
    assert rollout.state == "draft"


def test_illegal_action_is_a_409(devops_client, rollout_factory):
    rollout = rollout_factory(state="promoted")

    response = devops_client.post(f"{URL}{rollout.pk}/rollback/", {"reason": "x"}, format="json")

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "illegal_transition"
    rollout.refresh_from_db()
    assert rollout.state == "promoted"


def test_action_by_viewer_is_403_without_revealing_existence(token_client, viewer_user):
    client = token_client(viewer_user, "read", "registry:write")

    response = client.post(f"{URL}424242/start/", {"reason": "x"}, format="json")

    assert response.status_code == 403


def test_action_on_missing_rollout_is_404(devops_client):
    response = devops_client.post(f"{URL}424242/pause/", {"reason": "x"}, format="json")

    assert response.status_code == 404


def test_action_without_credentials_is_401(client, rollout_factory):
    rollout = rollout_factory()

    response = client.post(f"{URL}{rollout.pk}/start/", {"reason": "x"})

    assert response.status_code == 401


def test_rollout_list_filters_by_state(token_client, viewer_user, rollout_factory):
    rollout_factory(state="running")
    rollout_factory(state="draft")
    client = token_client(viewer_user, "read")

    response = client.get(URL, {"state": "running"})

    assert response.status_code == 200
    assert [r["state"] for r in response.json()["results"]] == ["running"]


@pytest.mark.parametrize("count", [1, 6])
def test_rollout_list_query_count_is_flat(
    token_client, viewer_user, rollout_factory, django_assert_max_num_queries, count
):
    rollout_factory.create_batch(count)
    client = token_client(viewer_user, "read")

    with django_assert_max_num_queries(6):
        response = client.get(URL)

    assert len(response.json()["results"]) == count
