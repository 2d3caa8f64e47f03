"""Flat lists: versions across models, replicas and the audit log; filters and ordering."""

from datetime import timedelta

import pytest
from django.utils import timezone

from registry.models import AuditEvent
from registry.roles import Actor
from registry.services import record_audit_event, record_heartbeat


@pytest.fixture
def reader(token_client, viewer_user):
    return token_client(viewer_user, "read")


def results(response):
    assert response.status_code == 200, response.content
    return response.json()["results"]


# --- Versions ---


def test_versions_filter_by_model_stage_and_format(reader, model_version_factory):
    wanted = model_version_factory(stage="production", format="onnx")
    model_version_factory(registered_model=wanted.registered_model, stage="staging")
    model_version_factory(stage="production", format="pickle")
    query = f"model={wanted.registered_model.name}&stage=production&format=onnx"

    rows = results(reader.get(f"/api/v1/versions/?{query}"))

    assert [r["id"] for r in rows] == [wanted.pk]


def test_versions_filter_by_framework(reader, model_version_factory):
    model_version_factory(framework="xgboost")
    model_version_factory(framework="pytorch")

    rows = results(reader.get("/api/v1/versions/?framework=xgboost"))

    assert [r["framework"] for r in rows] == ["xgboost"]


def test_versions_filter_by_training_window(reader, model_version_factory):
    now = timezone.now()
    old = model_version_factory(trained_at=now - timedelta(days=30))
    recent = model_version_factory(trained_at=now - timedelta(days=1))
    cut = (now - timedelta(days=7)).isoformat()

    after = results(reader.get("/api/v1/versions/", {"trained_after": cut}))
    before = results(reader.get("/api/v1/versions/", {"trained_before": cut}))

    assert [r["id"] for r in after] == [recent.pk]
    assert [r["id"] for r in before] == [old.pk]


def test_versions_ordering_by_trained_at(reader, model_version_factory):
    now = timezone.now()
    a = model_version_factory(trained_at=now - timedelta(days=2))
    b = model_version_factory(trained_at=now - timedelta(days=5))

    rows = results(reader.get("/api/v1/versions/?ordering=trained_at"))

    assert [r["id"] for r in rows] == [b.pk, a.pk]


@pytest.mark.parametrize(
    "query", ["stage=gone", "trained_after=yesterday", "trained_before=", "page_size=0"]
)
def test_versions_reject_bad_filters(reader, query):
    response = reader.get(f"/api/v1/versions/?{query}")

    assert response.status_code == 400
    assert response.json()["error"]["fields"]


def test_versions_out_of_range_page_is_404(reader, model_version):
    response = reader.get("/api/v1/versions/?page=9")

    assert response.status_code == 404


# --- Replicas ---


def test_replicas_filter_by_deployment_and_application(reader, deployment_factory, model_version):
    d1, d2 = deployment_factory.create_batch(2)
    record_heartbeat(deployment=d1, instance_id="pod-a", model_version=model_version)
    record_heartbeat(deployment=d2, instance_id="pod-b")

    by_deployment = results(reader.get(f"/api/v1/replicas/?deployment={d1.pk}"))
    by_application = results(reader.get(f"/api/v1/replicas/?application={d2.application.slug}"))

    assert [r["instance_id"] for r in by_deployment] == ["pod-a"]
    assert by_deployment[0]["reported_version"] == model_version.version
    assert by_deployment[0]["reported_sha256"] == model_version.sha256
    assert [r["instance_id"] for r in by_application] == ["pod-b"]
    assert by_application[0]["reported_model"] is None


def test_replicas_are_read_only(token_client, devops_user, replica):
    client = token_client(devops_user, "read", "registry:write", "replica:write")

    response = client.post("/api/v1/replicas/", {"instance_id": "x"}, format="json")

    assert response.status_code == 405


# --- Audit events ---


@pytest.fixture
def audit_trail(application_factory, devops_user):
    """Three events: two on app-a by dora (alias, version), one system event on app-b."""
    a, b = application_factory(slug="app-a"), application_factory(slug="app-b")
    now = timezone.now()
    dora = Actor.of(devops_user)
    record_audit_event(
        actor=dora, kind="alias.moved", target=a, application=a, at=now - timedelta(hours=3)
    )
    record_audit_event(
        actor=dora, kind="version.registered", target=a, application=a, at=now - timedelta(hours=2)
    )
    record_audit_event(
        actor=Actor.system(),
        kind="alias.moved",
        target=b,
        application=b,
        at=now - timedelta(hours=1),
    )
    return now


def test_audit_events_newest_first(reader, audit_trail):
    rows = results(reader.get("/api/v1/audit-events/"))

    ats = [r["at"] for r in rows]
    assert ats == sorted(ats, reverse=True)
    assert len(rows) == AuditEvent.objects.count() >= 3


def test_audit_events_filter_by_application(reader, audit_trail):
    rows = results(reader.get("/api/v1/audit-events/?application=app-a"))

    assert {r["application"] for r in rows} == {"app-a"}
    assert len(rows) == 2


def test_audit_events_filter_by_actor_and_kind(reader, audit_trail):
    rows = results(reader.get("/api/v1/audit-events/?actor=dora-devops&kind=alias.moved"))

    assert [(r["actor"], r["kind"]) for r in rows] == [("dora-devops", "alias.moved")]


def test_audit_events_filter_by_kind_prefix(reader, audit_trail):
    rows = results(reader.get("/api/v1/audit-events/?kind_prefix=alias."))

    assert len(rows) == 2


def test_audit_events_filter_by_time_window(reader, audit_trail):
    since = (audit_trail - timedelta(hours=2, minutes=30)).isoformat()
    until = (audit_trail - timedelta(minutes=90)).isoformat()

    rows = results(reader.get("/api/v1/audit-events/", {"since": since, "until": until}))

    assert [r["kind"] for r in rows] == ["version.registered"]


def test_audit_events_filter_accepts_extreme_offsets(reader, audit_trail):
    response = reader.get("/api/v1/audit-events/", {"since": "0080-10-16T11:31:31-21:45"})

    assert response.status_code == 200


def test_audit_events_are_read_only(token_client, devops_user, audit_trail):
    client = token_client(devops_user, "read", "registry:write")
    before = AuditEvent.objects.count()

    response = client.post("/api/v1/audit-events/", {}, format="json")

    assert response.status_code == 405
    assert AuditEvent.objects.count() == before
