import re

import pytest
from django.urls import reverse
from django.utils import timezone

from registry.models import AuditEvent, ModelVersion, Rollout
from tests.dashboard.pages_data import build_fleet


@pytest.fixture
def devops_client(client, devops_user):
    client.force_login(devops_user)
    return client


@pytest.fixture
def viewer_client(client, viewer_user):
    client.force_login(viewer_user)
    return client


@pytest.fixture
def product_client(client, product_user):
    client.force_login(product_user)
    return client


def _urls(fleet):
    app, dep, model, mvs, rollout = fleet[0]
    return {
        "home": reverse("dashboard:home"),
        "application": reverse("dashboard:application-detail", args=[app.slug]),
        "model": reverse("dashboard:model-detail", args=[model.name]),
        "rollout": reverse("dashboard:rollout-detail", args=[rollout.pk]),
        "replicas": reverse("dashboard:replicas"),
        "audit": reverse("dashboard:audit"),
    }


@pytest.mark.parametrize("page", ["home", "application", "model", "rollout", "replicas", "audit"])
def test_page_renders_with_data(devops_client, page):
    urls = _urls(build_fleet(apps=2))

    response = devops_client.get(urls[page])

    assert response.status_code == 200
    html = response.content.decode()
    assert 'style="' not in html  # a strict CSP forbids inline styles
    assert "<script>" not in html  # and inline scripts; figures travel as JSON data


@pytest.mark.parametrize("page", ["home", "replicas"])
@pytest.mark.parametrize("number", ["\u00b2", "9" * 5000, "-1", "x"])
def test_a_page_number_that_is_not_one_shows_the_first_page(devops_client, page, number):
    urls = _urls(build_fleet(apps=1))

    assert devops_client.get(urls[page], {"page": number}).status_code == 200


def _grow(first):
    """More of everything the pages read: applications, versions, deployments, replicas,
    allocations, audit events and rollups, both around and inside the first application."""
    from registry.roles import Actor
    from registry.services import AllocationSpec, set_allocation
    from tests.factories import registry as rf

    build_fleet(apps=6, versions=5, replicas=6, start=100)
    app, dep, model, mvs, rollout = first
    extra = [rf.ModelVersionFactory(registered_model=model, version=50 + n) for n in range(3)]
    dep2 = rf.DeploymentFactory(application=app, name="eu", desired_replicas=4)
    rf.ReplicaFactory.create_batch(4, deployment=dep2, reported_sha256=extra[0].sha256)
    for weights in ((100, 0), (70, 30), (50, 50)):
        set_allocation(
            actor=Actor.system("tests"),
            deployment=dep2,
            allocations=[AllocationSpec(extra[0], weights[0], "control")]
            + ([AllocationSpec(extra[1], weights[1], "canary")] if weights[1] else []),
            reason="shift",
        )


# budgets: session + user + the user's groups (menu) are 3; the rest is the page's own
BUDGETS = {"home": 17, "application": 18, "model": 10, "rollout": 12, "replicas": 8, "audit": 8}


@pytest.mark.parametrize("page", list(BUDGETS))
def test_page_query_count_is_flat(devops_client, django_assert_max_num_queries, page):
    fleet = build_fleet(apps=1, versions=2, replicas=2)
    small = _urls(fleet)
    with django_assert_max_num_queries(BUDGETS[page]) as small_run:
        assert devops_client.get(small[page]).status_code == 200
    _grow(fleet[0])

    with django_assert_max_num_queries(BUDGETS[page]) as large_run:
        assert devops_client.get(small[page]).status_code == 200

    assert len(large_run.captured_queries) == len(small_run.captured_queries)


def test_application_page_shows_its_pull_sources_last_success_and_last_error(viewer_client):
    from tests.factories.feedback import FeedbackSourceFactory

    app = build_fleet(apps=1)[0][0]
    FeedbackSourceFactory(
        application=app, name="clickstream", last_success_at=timezone.now(),
        consecutive_failures=3, last_error="HTTP 503 from upstream",
        last_error_at=timezone.now(), next_poll_at=timezone.now(),
    )  # fmt: skip
    FeedbackSourceFactory(name="elsewhere")  # another application's

    response = viewer_client.get(reverse("dashboard:application-detail", args=[app.slug]))

    page = response.content.decode()
    assert "clickstream" in page
    assert "HTTP 503 from upstream" in page
    assert "3 in a row" in page
    assert "elsewhere" not in page


def test_rollout_action_pauses_with_the_reason_in_the_audit_log(devops_client):
    rollout = build_fleet(apps=1)[0][4]

    response = devops_client.post(
        reverse("dashboard:rollout-action", args=[rollout.pk, "pause"]),
        {"reason": "bad-rec rate up on the canary"},
    )

    assert response.status_code == 302
    assert response["Location"] == reverse("dashboard:rollout-detail", args=[rollout.pk])
    rollout.refresh_from_db()
    assert rollout.state == Rollout.State.PAUSED
    event = AuditEvent.objects.get(kind="rollout.paused", target_id=str(rollout.pk))
    assert event.reason == "bad-rec rate up on the canary"


def test_rollout_action_without_a_reason_changes_nothing(devops_client):
    rollout = build_fleet(apps=1)[0][4]

    response = devops_client.post(
        reverse("dashboard:rollout-action", args=[rollout.pk, "rollback"]), {"reason": "  "}
    )

    assert response.status_code == 302
    rollout.refresh_from_db()
    assert rollout.state == Rollout.State.RUNNING
    assert not AuditEvent.objects.filter(kind="rollout.rolled_back").exists()


def test_rollout_action_that_is_illegal_now_says_so(devops_client):
    rollout = build_fleet(apps=1)[0][4]

    response = devops_client.post(
        reverse("dashboard:rollout-action", args=[rollout.pk, "resume"]),
        {"reason": "try"},
        follow=True,
    )

    assert "cannot resume a rollout that is running" in response.content.decode()
    rollout.refresh_from_db()
    assert rollout.state == Rollout.State.RUNNING


@pytest.mark.parametrize("role_client", ["viewer_client", "product_client"])
def test_rollout_action_by_another_role_is_forbidden(request, role_client):
    client = request.getfixturevalue(role_client)
    rollout = build_fleet(apps=1)[0][4]

    response = client.post(
        reverse("dashboard:rollout-action", args=[rollout.pk, "pause"]), {"reason": "forged"}
    )

    assert response.status_code == 403
    rollout.refresh_from_db()
    assert rollout.state == Rollout.State.RUNNING


def test_rollout_page_shows_actions_to_devops_only(devops_client, viewer_client, devops_user):
    rollout = build_fleet(apps=1)[0][4]
    url = reverse("dashboard:rollout-detail", args=[rollout.pk])

    as_viewer = viewer_client.get(url).content.decode()
    viewer_client.force_login(devops_user)
    as_devops = viewer_client.get(url).content.decode()

    assert "action-form" not in as_viewer
    assert as_devops.count('class="action-form"') == 4  # pause, promote, rollback, abort


def test_rollout_page_shows_the_srm_banner_on_a_mismatch(devops_client):
    from feedback.models import QualityRollup

    app, dep, model, mvs, rollout = build_fleet(apps=1)[0]
    # a 10 % canary that got half of the exposures: assignment is broken
    QualityRollup.objects.filter(model_version=mvs[-1], kind="impression").update(count=900)

    html = devops_client.get(reverse("dashboard:rollout-detail", args=[rollout.pk])).content

    assert b'data-testid="srm-banner"' in html


def test_home_filters_needs_attention_and_search(devops_client):
    fleet = build_fleet(apps=2)
    healthy = fleet[1][0]
    from registry.models import Replica

    Replica.objects.filter(deployment__application=healthy).update(last_heartbeat_at=timezone.now())
    ModelVersion.objects.filter(registered_model=fleet[1][2]).update(trained_at=timezone.now())

    attention = devops_client.get(reverse("dashboard:home"), {"attention": "1"}).content.decode()
    search = devops_client.get(reverse("dashboard:home"), {"q": healthy.slug}).content.decode()

    assert re.findall(r'data-app="([^"]+)"', attention) == [fleet[0][0].slug]
    assert re.findall(r'data-app="([^"]+)"', search) == [healthy.slug]


def test_home_paginates_with_applications_needing_attention_first(devops_client):
    fleet = build_fleet(apps=3)
    from registry.models import Replica

    for app, *_ in fleet[:2]:  # the first two become healthy: the third leads
        Replica.objects.filter(deployment__application=app).update(last_heartbeat_at=timezone.now())
        ModelVersion.objects.filter(registered_model__name=_[1].name).update(
            trained_at=timezone.now()
        )

    html = devops_client.get(reverse("dashboard:home")).content.decode()

    assert re.findall(r'data-app="([^"]+)"', html)[0] == fleet[2][0].slug


def test_audit_log_filters_by_application_and_kind(devops_client):
    fleet = build_fleet(apps=2)

    html = devops_client.get(
        reverse("dashboard:audit"), {"application": fleet[1][0].slug, "kind": "rollout.running"}
    ).content.decode()

    assert html.count('<code class="kind">rollout.running</code>') == 1
    assert f"/applications/{fleet[1][0].slug}/" in html
    assert f"/applications/{fleet[0][0].slug}/" not in html


def test_audit_log_with_a_bad_date_shows_the_error_not_a_500(devops_client):
    response = devops_client.get(reverse("dashboard:audit"), {"since": "yesterday"})

    assert response.status_code == 200
    assert "since:" in response.content.decode()


@pytest.mark.parametrize("url", ["/applications/nope/", "/models/nope/", "/rollouts/999999/"])
def test_unknown_objects_are_404(devops_client, url):
    assert devops_client.get(url).status_code == 404


def test_pages_empty_states(devops_client):
    html = devops_client.get(reverse("dashboard:replicas")).content.decode()
    assert "No deployment yet" in html
    assert "No event recorded" in devops_client.get(reverse("dashboard:audit")).content.decode()


def test_replicas_grid_marks_each_replica_and_says_what_it_serves_on_hover(devops_client):
    app, dep, model, mvs, rollout = build_fleet(apps=1, versions=2, replicas=2)[0]
    heartbeat = dep.replicas.get(instance_id="pod-0").last_heartbeat_at

    html = devops_client.get(reverse("dashboard:replicas")).content.decode()

    cells = re.findall(r'<a class="cell (\w+)" href="([^"]+)" title="([^"]+)"', html)
    url = reverse("dashboard:deployment-replicas", args=[dep.pk])
    assert [(state, href) for state, href, _ in cells] == [("ok", url), ("stale", url)]
    assert cells[0][2] == (
        f"pod-0 · {model.name} v1 · {mvs[0].sha256[:12]} · "
        f"heartbeat {heartbeat:%Y-%m-%d %H:%M:%S} UTC"
    )
