"""/metrics: families and labels, access control, query budget."""

from datetime import timedelta

import pytest
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from feedback.models import IngestBatch, QualityRollup
from feedback.services.alerts import raise_alert
from registry.models import Rollout, TrafficAllocation

ALLOWED = {"REMOTE_ADDR": "127.0.0.1"}
OUTSIDE = {"REMOTE_ADDR": "203.0.113.9"}


def scrape(client, **extra) -> dict:
    response = client.get("/metrics", **(extra or ALLOWED))
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    families = text_string_to_metric_families(response.content.decode())
    return {f.name: f for f in families}


def samples(family, **labels):
    return [s for s in family.samples if all(s.labels.get(k) == v for k, v in labels.items())]


@pytest.fixture
def fleet(deployment_factory, model_version_factory, traffic_allocation_factory, replica_factory):
    """One deployment: control v1 at 90 %, candidate v2 at 10 % in a running canary."""
    deployment = deployment_factory(application__slug="shop", name="prod", desired_replicas=3)
    v1 = model_version_factory(registered_model__name="ranker", version=1)
    v2 = model_version_factory(registered_model=v1.registered_model, version=2)
    traffic_allocation_factory(deployment=deployment, model_version=v1, weight=90)
    traffic_allocation_factory(
        deployment=deployment, model_version=v2, weight=10, role=TrafficAllocation.Role.CANARY
    )
    replica_factory(deployment=deployment, reported_sha256=v1.sha256)
    replica_factory(deployment=deployment, reported_sha256="0" * 64)  # serves something unallocated
    Rollout.objects.create(
        deployment=deployment,
        strategy=Rollout.Strategy.CANARY,
        baseline_version=v1,
        candidate_version=v2,
        steps=[{"percent": 10}, {"percent": 50}],
        state=Rollout.State.RUNNING,
        started_at=timezone.now(),
    )
    hour = timezone.now().replace(minute=0, second=0, microsecond=0)
    for kind, count in (("impression", 1000), ("conversion", 50), ("bad_recommendation", 20)):
        QualityRollup.objects.create(
            application=deployment.application, model_version=v2, kind=kind, hour=hour, count=count
        )
    return deployment


def test_it_exports_per_version_figures_with_their_labels(client, fleet):
    families = scrape(client)

    labels = {
        "application": "shop",
        "deployment": "prod",
        "model": "ranker",
        "version": "2",
        "role": "canary",
    }
    assert samples(families["modelops_traffic_weight_percent"], **labels)[0].value == 10
    assert samples(families["modelops_conversion_rate"], **labels)[0].value == pytest.approx(0.05)
    assert samples(families["modelops_bad_recommendation_rate"], **labels)[0].value == 0.02
    age = samples(families["modelops_model_age_seconds"], **labels)[0].value
    assert 6 * 3600 - 60 < age < 6 * 3600 + 60  # the factory trains versions 6 h ago
    assert samples(families["modelops_offline_accuracy"], **labels)[0].value == 0.91
    assert samples(families["modelops_model_age_slo_seconds"], application="shop")[0].value == 86400


def test_it_exports_replica_counts_and_rollout_progress(client, fleet):
    families = scrape(client)

    dep = {"application": "shop", "deployment": "prod"}
    assert samples(families["modelops_replicas_expected"], **dep)[0].value == 3
    assert samples(families["modelops_replicas_reporting"], **dep)[0].value == 2
    assert samples(families["modelops_replicas_mismatched"], **dep)[0].value == 1
    assert samples(families["modelops_rollout_state"], state="running", **dep)[0].value == 1
    assert samples(families["modelops_rollout_state"], state="paused", **dep)[0].value == 0
    assert samples(families["modelops_rollout_step"], **dep)[0].value == 0
    assert samples(families["modelops_rollout_steps"], **dep)[0].value == 2


def test_it_counts_firing_alerts_by_severity_with_zeros(client, fleet):
    raise_alert(
        rule_key="replica-probe-mismatch",
        target_key=f"deployment:{fleet.pk}",
        summary="replicas disagree",
        deployment=fleet,
    )

    family = scrape(client)["modelops_alerts_firing"]

    by_severity = {s.labels["severity"]: s.value for s in family.samples}
    assert sum(by_severity.values()) == 1
    assert set(by_severity) == {"info", "warning", "critical"}


def test_it_reports_the_ingest_backlog_and_events_ingested(client, ingest_batch_factory):
    ingest_batch_factory(
        state=IngestBatch.State.PENDING, created_at=timezone.now() - timedelta(minutes=5)
    )
    ingest_batch_factory(state=IngestBatch.State.PENDING)
    ingest_batch_factory(state=IngestBatch.State.DONE, accepted=7, duplicate=2, rejected=1)

    families = scrape(client)

    assert samples(families["modelops_ingest_batches"], state="pending")[0].value == 2
    oldest = families["modelops_ingest_oldest_pending_age_seconds"].samples[0].value
    assert 290 < oldest < 400
    events = families["modelops_feedback_events"]
    assert events.type == "counter"
    assert samples(events, source="api", outcome="accepted")[0].value == 7
    assert samples(events, source="api", outcome="rejected")[0].value == 1


def test_it_refuses_an_outside_address_without_a_token(client):
    response = client.get("/metrics", **OUTSIDE)

    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_it_refuses_a_bad_token(client):
    response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer nope", **OUTSIDE)

    assert response.status_code == 401


def test_it_refuses_a_token_without_the_read_scope(client, make_token, viewer_user):
    token = make_token(viewer_user, "feedback:write")

    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token}", **OUTSIDE)

    assert response.status_code == 403


def test_a_read_token_opens_it_from_anywhere(client, make_token, viewer_user):
    token = make_token(viewer_user, "read")

    families = scrape(client, HTTP_AUTHORIZATION=f"Bearer {token}", **OUTSIDE)

    assert "modelops_alerts_firing" in families


def test_allowed_networks_are_matched_by_prefix(client, settings):
    settings.METRICS_ALLOWED_IPS = ["10.0.0.0/8"]

    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 401


def test_workers_share_one_rendering_per_cache_interval(client, settings, ingest_batch_factory):
    settings.METRICS_CACHE_S = 30
    from django.core.cache import cache

    cache.delete("dashboard:metrics:v1")
    first = client.get("/metrics", **ALLOWED).content
    ingest_batch_factory(state=IngestBatch.State.PENDING)

    assert client.get("/metrics", **ALLOWED).content == first
    cache.delete("dashboard:metrics:v1")


@pytest.mark.parametrize("apps", [2, 12])
def test_the_scrape_query_count_does_not_grow_with_the_fleet(
    apps, django_assert_max_num_queries, traffic_allocation_factory, replica_factory
):
    for _ in range(apps):
        allocation = traffic_allocation_factory()
        replica_factory(deployment=allocation.deployment)
    from dashboard.metrics import render_metrics

    with django_assert_max_num_queries(12):  # measured 12 at 2 and at 12 apps
        render_metrics()


def test_it_counts_webhook_deliveries_waiting_or_given_up(client):
    from dashboard.models import WebhookDelivery, WebhookSubscription

    sub = WebhookSubscription.objects.create(name="ci", url="http://127.0.0.1:9/", events=["*"])
    for state in ("pending", "failed", "failed", "delivered"):
        WebhookDelivery.objects.create(
            subscription=sub, event="alias.moved", payload={}, state=state,
            next_attempt_at=timezone.now(),
        )  # fmt: skip

    family = scrape(client)["modelops_webhook_deliveries"]

    assert {s.labels["state"]: s.value for s in family.samples} == {"pending": 1, "failed": 2}
