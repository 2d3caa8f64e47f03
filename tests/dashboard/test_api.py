from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from registry.models import ApiToken


def status_url(slug):
    return reverse("application-status", kwargs={"slug": slug})


def test_application_status_lists_serving_versions_with_age_and_slo(api_client, serving):
    app, dep, control, canary = serving

    before = timezone.now()
    response = api_client.get(status_url("home-feed"))
    after = timezone.now()

    assert response.status_code == 200
    body = response.json()
    assert body["application"] == {
        "slug": "home-feed",
        "name": "Home feed",
        "team": "growth",
        "criticality": "medium",
        "max_model_age_s": 86400,
    }
    [deployment] = body["deployments"]
    assert deployment["name"] == "prod"
    first, second = deployment["versions"]
    assert (first["model"], first["version"], first["role"], first["weight"]) == (
        control.registered_model.name,
        control.version,
        "control",
        90,
    )
    assert first["sha256"] == control.sha256
    # bounded by the clock around the request, however slow the machine is
    age_before = (before - control.trained_at).total_seconds()
    age_after = (after - control.trained_at).total_seconds()
    assert age_before - 1 <= first["age_seconds"] <= age_after + 1
    assert first["slo_breached"] is True
    assert first["offline_accuracy"] == 0.9
    assert first["online_accuracy"] is None
    assert (second["role"], second["weight"], second["slo_breached"]) == ("canary", 10, False)
    assert second["offline_accuracy"] is None
    assert body["firing_alerts"] == []


def test_application_status_counts_stale_and_mismatched_replicas(
    api_client, serving, replica_factory, model_version_factory
):
    app, dep, control, canary = serving
    now = timezone.now()
    replica_factory(deployment=dep, reported_sha256=control.sha256, last_heartbeat_at=now)
    replica_factory(deployment=dep, reported_sha256=canary.sha256, last_heartbeat_at=now)
    replica_factory(
        deployment=dep, reported_sha256=model_version_factory().sha256, last_heartbeat_at=now
    )  # fresh, but serves an artifact nobody allocated
    replica_factory(
        deployment=dep,
        reported_sha256=control.sha256,
        last_heartbeat_at=now - timedelta(minutes=10),
    )  # older than the 120 s timeout

    response = api_client.get(status_url("home-feed"))

    assert response.json()["deployments"][0]["replicas"] == {
        "expected": 4,
        "reporting": 3,
        "stale": 1,
        "mismatched": 1,
        "inconsistent": 0,
        "last_check_at": None,
        "last_check_outcome": "",
    }


def test_application_status_counts_replicas_whose_last_probe_diverged(
    api_client, serving, replica_factory
):
    app, dep, control, canary = serving
    replica_factory(deployment=dep, reported_sha256=control.sha256, last_probe_verdict="divergent")
    replica_factory(deployment=dep, reported_sha256=control.sha256, last_probe_verdict="ok")

    response = api_client.get(status_url("home-feed"))

    assert response.json()["deployments"][0]["replicas"]["inconsistent"] == 1


def test_application_status_shows_the_active_rollout(api_client, serving, rollout_factory):
    app, dep, control, canary = serving
    rollout_factory(
        deployment=dep,
        baseline_version=control,
        candidate_version=canary,
        state="running",
        strategy="canary",
        current_step=1,
        steps=[{"percent": 5}, {"percent": 25}, {"percent": 100}],
    )

    rollout = api_client.get(status_url("home-feed")).json()["deployments"][0]["active_rollout"]

    assert rollout["state"] == "running"
    assert rollout["strategy"] == "canary"
    assert (rollout["step_index"], rollout["step_count"], rollout["percent"]) == (1, 3, 25)
    assert rollout["baseline"] == {
        "model": control.registered_model.name,
        "version": control.version,
    }
    assert rollout["candidate"]["version"] == canary.version


def test_application_status_ignores_finished_rollouts(api_client, serving, rollout_factory):
    app, dep, control, canary = serving
    rollout_factory(
        deployment=dep, baseline_version=control, candidate_version=canary, state="promoted"
    )

    response = api_client.get(status_url("home-feed"))

    assert response.json()["deployments"][0]["active_rollout"] is None


def test_application_status_returns_304_for_a_matching_etag(api_client, serving):
    etag = api_client.get(status_url("home-feed"))["ETag"]

    response = api_client.get(status_url("home-feed"), HTTP_IF_NONE_MATCH=etag)

    assert response.status_code == 304
    assert response.content == b""
    assert response["ETag"] == etag


def test_application_status_etag_changes_when_the_allocation_changes(
    api_client, serving, devops_actor
):
    from registry.services import AllocationSpec, set_allocation

    app, dep, control, canary = serving
    etag = api_client.get(status_url("home-feed"))["ETag"]
    set_allocation(
        actor=devops_actor,
        deployment=dep,
        allocations=[AllocationSpec(model_version=canary, weight=100)],
    )

    response = api_client.get(status_url("home-feed"), HTTP_IF_NONE_MATCH=etag)

    assert response.status_code == 200
    assert response["ETag"] != etag
    assert [v["weight"] for v in response.json()["deployments"][0]["versions"]] == [100]


def test_application_status_unknown_slug_is_404_in_the_error_shape(api_client):
    response = api_client.get(status_url("no-such-app"))

    assert response.status_code == 404
    assert response.json()["error"]["status"] == 404
    assert response.json()["error"]["code"] == "not_found"


def test_application_status_without_credentials_is_401(serving):
    from rest_framework.test import APIClient

    response = APIClient().get(status_url("home-feed"))

    assert response.status_code == 401
    assert response.json()["error"]["status"] == 401
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_application_status_unknown_slug_without_credentials_is_401_not_404():
    from rest_framework.test import APIClient

    response = APIClient().get(status_url("no-such-app"))

    assert response.status_code == 401


def test_application_status_works_with_a_viewer_read_token(token_client, viewer_user, serving):
    response = token_client(viewer_user, ApiToken.Scope.READ).get(status_url("home-feed"))

    assert response.status_code == 200
    assert response.json()["application"]["slug"] == "home-feed"


def test_application_status_refuses_a_token_without_read_scope(token_client, product_user, serving):
    client = token_client(product_user, ApiToken.Scope.FEEDBACK_WRITE)

    response = client.get(status_url("home-feed"))

    assert response.status_code == 403
    assert response.json()["error"]["status"] == 403


@pytest.mark.parametrize("size", [1, 4])
def test_application_status_query_count_is_constant(
    api_client, make_fleet, django_assert_num_queries, size
):
    [app] = make_fleet(apps=1, deployments=size, versions=size, replicas=2 * size)

    # application, deployments, allocations, replica counts, rollouts, online accuracy,
    # firing alerts
    with django_assert_num_queries(7):
        response = api_client.get(status_url(app.slug))

    assert response.status_code == 200
    assert len(response.json()["deployments"]) == size


@pytest.mark.parametrize("size", [1, 5])
def test_fleet_status_query_count_is_constant(
    api_client, make_fleet, django_assert_num_queries, size
):
    make_fleet(apps=size, deployments=2, versions=size, replicas=size)

    # built (nothing cached yet): the list of applications, then the application status
    # queries (+ online accuracy, firing alerts) once for all, and when replicas go stale
    with django_assert_num_queries(9):
        response = api_client.get(reverse("fleet-status"))

    assert response.status_code == 200
    assert len(response.json()["applications"]) == size


@pytest.mark.parametrize("size", [1, 5])
def test_a_warm_fleet_status_reads_only_the_list_of_applications(
    api_client, make_fleet, django_assert_num_queries, size
):
    make_fleet(apps=size, deployments=2, versions=size, replicas=size)
    first = api_client.get(reverse("fleet-status")).json()

    with django_assert_num_queries(1):  # every entry from the cache, checked by generation
        response = api_client.get(reverse("fleet-status"))

    assert response.json() == first


def test_fleet_status_returns_every_application_in_the_per_app_shape(
    api_client, serving, application_factory
):
    application_factory(slug="zz-empty")

    response = api_client.get(reverse("fleet-status"))

    apps = response.json()["applications"]
    assert [a["application"]["slug"] for a in apps] == ["home-feed", "zz-empty"]
    assert apps[1]["deployments"] == []
    assert set(apps[0]) == {"application", "deployments", "firing_alerts"}


def test_fleet_status_supports_etags(api_client, serving):
    etag = api_client.get(reverse("fleet-status"))["ETag"]

    response = api_client.get(reverse("fleet-status"), HTTP_IF_NONE_MATCH=f'"other", {etag}')

    assert response.status_code == 304


def test_application_status_lists_firing_alerts(api_client, serving):
    from feedback.services.alerts import raise_alert

    app, dep, control, canary = serving
    raise_alert(
        rule_key="replica-probe-mismatch",
        target_key=f"d:{dep.pk}",
        summary="2 replicas disagree",
        application=app,
        deployment=dep,
    )

    [alert] = api_client.get(status_url("home-feed")).json()["firing_alerts"]

    assert alert["message"] == "2 replicas disagree"
    assert alert["deployment"] == "prod"
    assert alert["since"].endswith("Z")
    assert set(alert) == {"id", "name", "severity", "message", "deployment", "since"}
