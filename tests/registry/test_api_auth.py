"""Who may call the registry API: tokens, scopes and roles; nothing leaks about existence."""

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from registry.models import ApiToken, ModelVersion
from registry.roles import Actor
from registry.services import create_api_token, revoke_api_token

SHA = "a" * 64
VERSION_BODY = {
    "artifact_uri": "s3://m/1/model.onnx",
    "sha256": SHA,
    "size_bytes": 10,
    "trained_at": "2026-01-01T00:00:00Z",
}


def bearer(raw):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


def test_api_without_credentials_is_401_with_challenge(application):
    response = APIClient().get("/api/v1/applications/")

    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert response.json()["error"]["status"] == 401


def test_api_with_unknown_token_is_401():
    response = bearer("mo_not-a-real-token").get("/api/v1/applications/")

    assert response.status_code == 401


def test_api_with_revoked_token_is_401(viewer_user):
    token, raw = create_api_token(actor=Actor.system(), user=viewer_user, name="t", scopes=["read"])
    revoke_api_token(actor=Actor.system(), token=token)

    response = bearer(raw).get("/api/v1/applications/")

    assert response.status_code == 401


def test_api_with_expired_token_is_401(viewer_user):
    _, raw = create_api_token(
        actor=Actor.system(),
        user=viewer_user,
        name="t",
        scopes=["read"],
        expires_at=timezone.now() - timedelta(seconds=1),
    )

    response = bearer(raw).get("/api/v1/applications/")

    assert response.status_code == 401


def test_api_read_needs_read_scope(token_client, devops_user, application):
    client = token_client(devops_user, "feedback:write")

    response = client.get(f"/api/v1/applications/{application.slug}/")

    assert response.status_code == 403


def test_api_viewer_with_read_token_reads(token_client, viewer_user, application):
    response = token_client(viewer_user, "read").get(f"/api/v1/applications/{application.slug}/")

    assert response.status_code == 200
    assert response.json()["slug"] == application.slug


def test_api_read_only_token_cannot_register_version(token_client, devops_user, registered_model):
    client = token_client(devops_user, "read")

    response = client.post(
        f"/api/v1/models/{registered_model.name}/versions/", VERSION_BODY, format="json"
    )

    assert response.status_code == 403
    assert not ModelVersion.objects.exists()


def test_api_viewer_with_registry_write_token_cannot_register(
    token_client, viewer_user, registered_model
):
    client = token_client(viewer_user, "read", "registry:write")

    response = client.post(
        f"/api/v1/models/{registered_model.name}/versions/", VERSION_BODY, format="json"
    )

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"
    assert not ModelVersion.objects.exists()


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("post", "/api/v1/models/{name}/versions/"),
        ("put", "/api/v1/models/{name}/aliases/champion"),
        ("put", "/api/v1/deployments/{id}/allocation"),
        ("patch", "/api/v1/applications/{slug}/"),
    ],
)
def test_api_forbidden_write_looks_the_same_for_existing_and_missing_objects(
    token_client, viewer_user, registered_model, deployment, method, url
):
    client = token_client(viewer_user, "read", "registry:write")
    real = url.format(
        name=registered_model.name, id=deployment.pk, slug=deployment.application.slug
    )
    missing = url.format(name="no-such-model", id=deployment.pk + 1000, slug="no-such-app")

    on_real = getattr(client, method)(real, {}, format="json")
    on_missing = getattr(client, method)(missing, {}, format="json")

    assert on_real.status_code == on_missing.status_code == 403
    assert on_real.json() == on_missing.json()


def test_api_missing_object_unauthenticated_is_401_not_404():
    response = APIClient().get("/api/v1/models/no-such-model/versions/")

    assert response.status_code == 401


def test_api_records_token_last_use(token_client, viewer_user):
    token, raw = create_api_token(actor=Actor.system(), user=viewer_user, name="t", scopes=["read"])

    bearer(raw).get("/api/v1/applications/")

    token.refresh_from_db()
    assert token.last_used_at is not None


def test_api_session_user_keeps_role_checks(client, viewer_user, registered_model):
    client.force_login(viewer_user)

    response = client.post(
        f"/api/v1/models/{registered_model.name}/versions/",
        VERSION_BODY,
        content_type="application/json",
    )

    assert response.status_code == 403
    assert ApiToken.objects.count() == 0
