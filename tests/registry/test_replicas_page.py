from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from dashboard.celery import app as celery_app
from registry.models import ConsistencyCheck
from registry.services import record_heartbeat
from registry.services.probes import ProbeOptions, probe_deployment, save_golden_set
from tests.registry.model_servers import model_servers_fixture  # noqa: F401


def page_url(deployment):
    return f"/deployments/{deployment.pk}/replicas/"


def probe_url(deployment):
    return f"/deployments/{deployment.pk}/replicas/probe/"


@pytest.fixture
def fleet(traffic_allocation, model_version_factory):
    """pod-ok (fresh, right artifact), pod-old (stale), pod-wrong (unallocated artifact)."""
    dep, sha = traffic_allocation.deployment, traffic_allocation.model_version.sha256
    with time_machine.travel(timezone.now() - timedelta(hours=2)):
        record_heartbeat(deployment=dep, instance_id="pod-old", sha256=sha)
    record_heartbeat(deployment=dep, instance_id="pod-ok", sha256=sha, host="node-1")
    record_heartbeat(deployment=dep, instance_id="pod-wrong", sha256=model_version_factory().sha256)
    return dep


@pytest.fixture
def logged_in(client):
    def login(user):
        client.force_login(user)
        return client

    return login


def card(html, instance_id):
    start = html.index(f'data-instance="{instance_id}"')
    return html[html.rindex("<article", 0, start) : html.index("</article>", start)]


def test_replica_page_highlights_stale_and_mismatched_replicas(logged_in, viewer_user, fleet):
    response = logged_in(viewer_user).get(page_url(fleet))

    assert response.status_code == 200
    html = response.content.decode()
    assert "is-stale" in card(html, "pod-old")
    assert "is-mismatched" in card(html, "pod-wrong")
    assert "is-stale" not in card(html, "pod-ok")
    assert "is-mismatched" not in card(html, "pod-ok")
    assert 'data-testid="mismatched-count">1<' in html
    assert 'data-testid="stale-count">1<' in html


def test_replica_page_shows_last_verdict_and_first_difference(
    logged_in, viewer_user, traffic_allocation, model_servers, system_actor
):
    dep = traffic_allocation.deployment
    save_golden_set(
        actor=system_actor,
        registered_model=traffic_allocation.model_version.registered_model,
        name="g",
        inputs=[{"name": "one", "input": {"x": 1}}],
    )
    for i, server in enumerate(model_servers("A", "A", "B")):
        record_heartbeat(
            deployment=dep,
            instance_id=f"pod-{i}",
            url=server.url,
            sha256=traffic_allocation.model_version.sha256,
        )
    probe_deployment(deployment=dep, actor=system_actor, options=ProbeOptions(timeout=0.3))

    html = logged_in(viewer_user).get(page_url(dep)).content.decode()

    odd = card(html, "pod-2")
    assert "is-divergent" in odd
    assert "Differs on <code>g/one</code>" in odd
    assert "&quot;label&quot;: &quot;even&quot;" in odd  # its answer, as escaped JSON
    assert 'data-testid="inconsistent-count">1<' in html


def test_replica_page_hides_probe_button_from_non_devops(logged_in, viewer_user, fleet):
    html = logged_in(viewer_user).get(page_url(fleet)).content.decode()

    assert "Probe now" not in html


def test_replica_page_of_unknown_deployment_is_404(logged_in, viewer_user):
    assert logged_in(viewer_user).get("/deployments/999999/replicas/").status_code == 404


def test_replica_page_needs_login(client, fleet):
    response = client.get(page_url(fleet))

    assert response.status_code == 302
    assert "/login/" in response["Location"]


@pytest.mark.parametrize("size", [2, 12])
def test_replica_page_query_count_is_flat(
    logged_in, viewer_user, traffic_allocation, system_actor, django_assert_max_num_queries, size
):
    client = logged_in(viewer_user)
    save_golden_set(
        actor=system_actor,
        registered_model=traffic_allocation.model_version.registered_model,
        name="g",
        inputs=[{"input": 1}],
    )
    for i in range(size):
        record_heartbeat(
            deployment=traffic_allocation.deployment,
            instance_id=f"pod-{i}",
            model_version=traffic_allocation.model_version,
        )
    probe_deployment(deployment=traffic_allocation.deployment, actor=system_actor)

    with django_assert_max_num_queries(9):
        response = client.get(page_url(traffic_allocation.deployment))

    assert response.status_code == 200
    assert response.content.decode().count("verdict-unreachable") == size  # replicas without url


@pytest.mark.django_db(transaction=True)
def test_probe_now_by_devops_runs_a_manual_probe(logged_in, devops_user, fleet, monkeypatch):
    monkeypatch.setitem(celery_app.conf, "task_always_eager", True)

    response = logged_in(devops_user).post(probe_url(fleet))

    assert response.status_code == 302
    assert response["Location"] == page_url(fleet)
    check = ConsistencyCheck.objects.get(deployment=fleet)
    assert (check.trigger, check.triggered_by) == ("manual", devops_user.username)


def test_probe_now_is_forbidden_to_other_roles(logged_in, product_user, fleet):
    response = logged_in(product_user).post(probe_url(fleet))

    assert response.status_code == 403
    assert not ConsistencyCheck.objects.exists()


def test_probe_now_refuses_get(logged_in, devops_user, fleet):
    assert logged_in(devops_user).get(probe_url(fleet)).status_code == 405
