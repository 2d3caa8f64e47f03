"""Applications endpoint: list, filter, retrieve, create and update, audited."""

from datetime import timedelta

import pytest

from registry.models import Application, AuditEvent


@pytest.fixture
def writer(token_client, devops_user):
    return token_client(devops_user, "read", "registry:write")


@pytest.fixture
def reader(token_client, viewer_user):
    return token_client(viewer_user, "read")


def test_applications_list_is_paginated_and_ordered_by_slug(reader, application_factory):
    application_factory.create_batch(3)

    response = reader.get("/api/v1/applications/?page_size=2")

    body = response.json()
    assert response.status_code == 200
    assert body["count"] == 3
    assert len(body["results"]) == 2
    assert body["next"]
    slugs = [a["slug"] for a in body["results"]]
    assert slugs == sorted(slugs)


def test_applications_list_filters_by_team(reader, application_factory):
    application_factory(team="search")
    application_factory(team="growth")

    response = reader.get("/api/v1/applications/?team=search")

    assert [a["team"] for a in response.json()["results"]] == ["search"]


def test_applications_list_rejects_unknown_criticality(reader):
    response = reader.get("/api/v1/applications/?criticality=extreme")

    assert response.status_code == 400
    assert "criticality" in response.json()["error"]["fields"]


def test_applications_list_rejects_bad_page_size(reader):
    response = reader.get("/api/v1/applications/?page_size=lots")

    assert response.status_code == 400
    assert "page_size" in response.json()["error"]["fields"]


def test_application_retrieve_shows_slo_in_seconds(reader, application_factory):
    app = application_factory(max_model_age=timedelta(hours=24))

    body = reader.get(f"/api/v1/applications/{app.slug}/").json()

    assert body["max_model_age_seconds"] == 86400
    assert body["max_model_age"] == "1 00:00:00"


def test_application_retrieve_unknown_is_404(reader):
    response = reader.get("/api/v1/applications/nope/")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_application_create_by_devops_is_audited(writer):
    body = {"slug": "fraud", "name": "Fraud", "team": "risk", "max_model_age": "PT12H"}

    response = writer.post("/api/v1/applications/", body, format="json")

    assert response.status_code == 201
    app = Application.objects.get(slug="fraud")
    assert app.max_model_age == timedelta(hours=12)
    event = AuditEvent.objects.get(kind="application.created")
    assert event.actor_label == "dora-devops (token test)"


def test_application_create_duplicate_slug_is_409(writer, application):
    body = {"slug": application.slug, "name": "X", "team": "t", "max_model_age": "P1D"}

    response = writer.post("/api/v1/applications/", body, format="json")

    assert response.status_code == 409
    assert response.json()["error"]["fields"] == {
        "slug": [f"application {application.slug!r} already exists"]
    }


@pytest.mark.parametrize(
    ("field", "value"),
    [("slug", "Not A Slug"), ("max_model_age", "soon"), ("max_model_age", "PT0S"), ("team", 7)],
)
def test_application_create_rejects_bad_field(writer, field, value):
    body = {"slug": "ok", "name": "Ok", "team": "t", "max_model_age": "P1D", field: value}

    response = writer.post("/api/v1/applications/", body, format="json")

    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]
    assert not Application.objects.exists()


def test_application_create_rejects_unknown_fields(writer):
    body = {"slug": "ok", "name": "Ok", "team": "t", "max_model_age": "P1D", "owner": "me"}

    response = writer.post("/api/v1/applications/", body, format="json")

    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"owner": ["Unknown field."]}
    assert not Application.objects.exists()


def test_application_update_changes_slo_with_before_and_after(writer, application):
    response = writer.patch(
        f"/api/v1/applications/{application.slug}/",
        {"max_model_age": "PT6H", "reason": "hourly retraining"},
        format="json",
    )

    assert response.status_code == 200
    application.refresh_from_db()
    assert application.max_model_age == timedelta(hours=6)
    event = AuditEvent.objects.get(kind="application.updated")
    assert event.before == {"max_model_age": 86400.0}
    assert event.after == {"max_model_age": 21600.0}
    assert event.reason == "hourly retraining"


def test_application_update_cannot_change_slug(writer, application):
    response = writer.patch(
        f"/api/v1/applications/{application.slug}/", {"slug": "renamed"}, format="json"
    )

    assert response.status_code == 400
    assert Application.objects.filter(slug=application.slug).exists()


def test_application_put_is_not_offered(writer, application):
    response = writer.put(f"/api/v1/applications/{application.slug}/", {}, format="json")

    assert response.status_code == 405


def test_application_with_legacy_uppercase_slug_is_reachable(reader, application_factory):
    app = application_factory(slug="Legacy_App")

    response = reader.get(f"/api/v1/applications/{app.slug}/")

    assert response.status_code == 200


def test_application_lookup_with_nul_byte_is_404_not_500(reader):
    response = reader.get("/api/v1/applications/a%00b/")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
