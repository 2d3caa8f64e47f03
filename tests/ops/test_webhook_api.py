"""/api/v1/webhooks/: devops subscribe pipelines' receivers; the secret is shown once."""

import pytest

from dashboard.models import WebhookDelivery, WebhookSubscription
from registry.models import AuditEvent

URL = "/api/v1/webhooks/"


@pytest.fixture
def devops_api(token_client, devops_user):
    return token_client(devops_user, "read", "registry:write")


def test_devops_subscribe_and_get_the_secret_once(devops_api, application_factory):
    application_factory(slug="shop")

    created = devops_api.post(
        URL,
        {
            "name": "cd",
            "url": "https://ci.example.com/hook",
            "events": ["alias.moved", "rollout.*"],
            "application": "shop",
        },
        format="json",
    )

    assert created.status_code == 201, created.json()
    body = created.json()
    assert len(body["secret"]) >= 32
    assert body["application"] == "shop"
    again = devops_api.get(f"{URL}{body['id']}/").json()
    assert "secret" not in again
    assert again["events"] == ["alias.moved", "rollout.*"]
    assert AuditEvent.objects.filter(kind="webhook.created").count() == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "url": "ftp://h/x", "events": ["*"]}, "url"),
        ({"name": "x", "url": "https://h/x", "events": ["alias.renamed"]}, "events"),
        ({"name": "x", "url": "https://h/x", "events": []}, "events"),
        (
            {"name": "x", "url": "https://h/x", "events": ["*"], "application": "nope"},
            "application",
        ),
    ],
)
def test_bad_subscriptions_are_400_with_the_field(devops_api, body, field):
    response = devops_api.post(URL, body, format="json")

    assert response.status_code == 400
    assert any(k.split(".")[0] == field for k in response.json()["error"]["fields"])


def test_other_roles_cannot_even_list(token_client, product_user):
    response = token_client(product_user, "read", "registry:write").get(URL)

    assert response.status_code == 403


def test_without_a_token_it_is_401(api_client):
    from rest_framework.test import APIClient

    assert APIClient().get(URL).status_code == 401


def test_disable_then_delete_with_the_delivery_log(devops_api):
    sub = WebhookSubscription.objects.create(name="cd", url="https://h/x", events=["*"])
    WebhookDelivery.objects.create(
        subscription=sub, event="alias.moved", payload={}, next_attempt_at="2026-01-01T00:00Z"
    )

    patched = devops_api.patch(f"{URL}{sub.pk}/", {"enabled": False}, format="json")
    log = devops_api.get(f"{URL}{sub.pk}/deliveries/")
    deleted = devops_api.delete(f"{URL}{sub.pk}/")

    assert patched.json()["enabled"] is False
    assert log.json()["results"][0]["event"] == "alias.moved"
    assert deleted.status_code == 204
    assert not WebhookDelivery.objects.exists()
