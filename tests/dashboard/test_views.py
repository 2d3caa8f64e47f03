import re

import pytest
from django.urls import reverse

from registry.models import ApiToken, AuditEvent


@pytest.fixture
def logged_in(client, devops_user):
    client.force_login(devops_user)
    return client


def test_home_redirects_anonymous_users_to_login(client):
    response = client.get(reverse("dashboard:home"))

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login") + "?next=/")


def test_login_page_renders_the_form(client):
    response = client.get(reverse("login"))

    assert response.status_code == 200
    assert b'name="username"' in response.content
    assert b"plotly.min.js" not in response.content  # the sign-in page skips the 4.8 MB library


def test_login_with_valid_credentials_lands_on_the_fleet(client, devops_user):
    response = client.post(
        reverse("login"), {"username": devops_user.username, "password": "pw-for-tests-1"}
    )

    assert response.status_code == 302
    assert response["Location"] == reverse("dashboard:home")


def test_home_renders_one_row_per_application(logged_in, serving, application_factory):
    application_factory(slug="search-ranking", name="Search ranking")

    response = logged_in.get(reverse("dashboard:home"))

    html = response.content.decode()
    assert response.status_code == 200
    assert re.findall(r'data-app="([^"]+)"', html) == ["home-feed", "search-ranking"]
    assert "SLO breached" in html  # the 30 h old control version against a 24 h SLO
    assert "90%" in html
    assert "10%" in html


def test_home_shows_offline_and_online_accuracy_per_version(logged_in, serving):
    from django.utils import timezone

    from feedback.models import QualityRollup

    app, dep, control, canary = serving
    hour = timezone.now().replace(minute=0, second=0, microsecond=0)
    QualityRollup.objects.create(
        application=app,
        model_version=control,
        kind="label",
        hour=hour,
        count=200,
        correct=177,
        labelled=200,
    )

    html = logged_in.get(reverse("dashboard:home")).content.decode()

    assert f"v{control.version}</span> <span" in html
    assert "90.0%" in html  # offline, from the registered metrics
    assert "88.5%" in html  # online: 177 of 200 labelled


def test_home_loads_vendored_scripts_from_this_site(logged_in):
    html = logged_in.get(reverse("dashboard:home")).content.decode()

    assert "/static/plotly/plotly.min.js" in html
    assert "/static/django_htmx/htmx-2.min.js" in html
    assert "https://" not in html.split("<body")[0]  # nothing from a CDN


def test_home_shows_a_useful_empty_state(logged_in):
    response = logged_in.get(reverse("dashboard:home"))

    assert b"No applications yet" in response.content
    assert b"seed_demo" in response.content


def test_home_htmx_poll_renders_only_the_table(logged_in, serving):
    response = logged_in.get(reverse("dashboard:home"), HTTP_HX_REQUEST="true")

    html = response.content.decode()
    assert 'data-app="home-feed"' in html
    assert "<html" not in html


def test_home_shows_admin_link_only_to_staff(client, viewer_user, devops_user):
    client.force_login(viewer_user)
    assert b"/admin/" not in client.get(reverse("dashboard:home")).content

    devops_user.is_staff = True
    devops_user.save()
    client.force_login(devops_user)
    assert b"/admin/" in client.get(reverse("dashboard:home")).content


@pytest.mark.parametrize("size", [1, 6])
def test_home_query_count_is_constant(logged_in, make_fleet, django_assert_num_queries, size):
    make_fleet(apps=size, deployments=2, versions=size, replicas=size)

    # session, user; matching apps, 5 attention verdicts, teams; 7 for the page's statuses;
    # the user's groups in the menu
    with django_assert_num_queries(17):
        response = logged_in.get(reverse("dashboard:home"))

    assert response.content.decode().count("data-app=") == size


# --- Tokens ---


def test_tokens_page_requires_login(client):
    response = client.get(reverse("dashboard:tokens"))

    assert response.status_code == 302


def test_tokens_create_shows_the_secret_once(client, product_user):
    client.force_login(product_user)

    response = client.post(
        reverse("dashboard:tokens"),
        {"name": "ci", "scopes": ["read", "feedback:write"], "expires_in_days": 30},
    )

    token = ApiToken.objects.get(user=product_user)
    secret = re.search(r'value="(mo_[^"]+)"', response.content.decode()).group(1)
    assert response.status_code == 201
    assert response["Cache-Control"] == "no-store"
    assert secret.startswith(token.prefix)
    assert token.scopes == ["feedback:write", "read"]
    assert secret not in client.get(reverse("dashboard:tokens")).content.decode()


def test_tokens_created_in_the_ui_authenticate_api_calls(client, viewer_user, serving):
    from rest_framework.test import APIClient

    client.force_login(viewer_user)
    response = client.post(
        reverse("dashboard:tokens"), {"name": "cli", "scopes": ["read"], "expires_in_days": 7}
    )
    secret = re.search(r'value="(mo_[^"]+)"', response.content.decode()).group(1)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")

    assert api.get(reverse("application-status", kwargs={"slug": "home-feed"})).status_code == 200


@pytest.mark.parametrize(
    ("role_user", "offered"),
    [
        ("viewer_user", ["read"]),
        ("product_user", ["read", "feedback:write"]),
        ("devops_user", ["read", "feedback:write", "registry:write", "replica:write"]),
    ],
)
def test_tokens_form_offers_only_the_scopes_of_the_role(client, request, role_user, offered):
    client.force_login(request.getfixturevalue(role_user))

    html = client.get(reverse("dashboard:tokens")).content.decode()

    assert re.findall(r'name="scopes" value="([^"]+)"', html) == offered


def test_tokens_refuses_a_scope_beyond_the_role(client, viewer_user):
    client.force_login(viewer_user)

    response = client.post(
        reverse("dashboard:tokens"),
        {"name": "sneaky", "scopes": ["read", "registry:write"], "expires_in_days": 7},
    )

    assert response.status_code == 200
    assert b"not one of the available choices" in response.content
    assert not ApiToken.objects.filter(user=viewer_user).exists()


def test_tokens_rejects_a_missing_name_and_bad_expiry(client, viewer_user):
    client.force_login(viewer_user)

    response = client.post(
        reverse("dashboard:tokens"), {"name": "", "scopes": ["read"], "expires_in_days": 0}
    )

    assert response.status_code == 200
    assert response.content.decode().count('class="field-error"') == 2
    assert not ApiToken.objects.exists()


def test_tokens_lists_live_tokens_before_revoked_ones(client, devops_user, make_token):
    from registry.roles import Actor
    from registry.services import revoke_api_token

    client.force_login(devops_user)
    make_token(devops_user, "read")
    old = ApiToken.objects.get(user=devops_user)
    revoke_api_token(actor=Actor.of(devops_user), token=old)
    make_token(devops_user, "read")

    html = client.get(reverse("dashboard:tokens")).content.decode()

    assert html.index("Revoke</button>") < html.index(">revoked</span>")


def test_tokens_revoke_redirects_and_revokes(client, devops_user, make_token):
    client.force_login(devops_user)
    make_token(devops_user, "read")
    token = ApiToken.objects.get(user=devops_user)

    response = client.post(reverse("dashboard:token-revoke", args=[token.pk]))

    token.refresh_from_db()
    assert response.status_code == 302
    assert response["Location"] == reverse("dashboard:tokens")
    assert token.revoked_at is not None
    assert AuditEvent.objects.filter(kind="token.revoked", target_id=str(token.pk)).exists()


def test_tokens_revoke_of_another_users_token_is_404(client, devops_user, viewer_user, make_token):
    make_token(devops_user, "read")
    token = ApiToken.objects.get(user=devops_user)
    client.force_login(viewer_user)

    response = client.post(reverse("dashboard:token-revoke", args=[token.pk]))

    token.refresh_from_db()
    assert response.status_code == 404
    assert token.revoked_at is None


def test_tokens_revoke_needs_post(client, devops_user, make_token):
    client.force_login(devops_user)
    make_token(devops_user, "read")
    token = ApiToken.objects.get(user=devops_user)

    response = client.get(reverse("dashboard:token-revoke", args=[token.pk]))

    assert response.status_code == 405


def test_tokens_revoke_is_csrf_protected(devops_user, make_token):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(devops_user)
    make_token(devops_user, "read")
    token = ApiToken.objects.get(user=devops_user)

    response = client.post(reverse("dashboard:token-revoke", args=[token.pk]))

    token.refresh_from_db()
    assert response.status_code == 403
    assert token.revoked_at is None
