"""Bearer tokens remembered in the shared cache: no token query per request, no delay on
revocation, deactivation or a change of scopes."""

from datetime import timedelta

import time_machine
from django.contrib.auth.models import Group
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from registry.models import ApiToken
from registry.roles import Actor, has_role
from registry.services import authenticate_token, create_api_token, revoke_api_token

URL = reverse("registry-api:application-list")


def bearer(raw):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


def new_token(user, *scopes, **kwargs):
    return create_api_token(
        actor=Actor.system("tests"), user=user, name="t", scopes=list(scopes) or ["read"], **kwargs
    )


def test_a_remembered_token_reads_no_token_row(viewer_user, django_assert_num_queries):
    token, raw = new_token(viewer_user)
    authenticate_token(raw)

    with django_assert_num_queries(0):
        found = authenticate_token(raw)

    assert found.pk == token.pk
    assert found.user.username == viewer_user.username
    assert found.scopes == ["read"]


def test_revoking_a_remembered_token_applies_at_once(viewer_user):
    token, raw = new_token(viewer_user)
    assert bearer(raw).get(URL).status_code == 200

    revoke_api_token(actor=Actor.system("tests"), token=token)

    assert bearer(raw).get(URL).status_code == 401


def test_deleting_a_remembered_token_applies_at_once(viewer_user):
    token, raw = new_token(viewer_user)
    assert authenticate_token(raw) is not None

    ApiToken.objects.filter(pk=token.pk).delete()

    assert authenticate_token(raw) is None


def test_deactivating_the_user_applies_at_once(viewer_user):
    _, raw = new_token(viewer_user)
    assert bearer(raw).get(URL).status_code == 200

    viewer_user.is_active = False
    viewer_user.save()

    assert bearer(raw).get(URL).status_code == 401


def test_a_change_of_scopes_applies_at_once(viewer_user):
    token, raw = new_token(viewer_user, "read")
    assert bearer(raw).get(URL).status_code == 200

    token.scopes = ["feedback:write"]
    token.save()

    assert bearer(raw).get(URL).status_code == 403


def test_a_remembered_token_still_expires_on_time(viewer_user):
    expires = timezone.now() + timedelta(minutes=5)
    _, raw = new_token(viewer_user, expires_at=expires)
    assert authenticate_token(raw) is not None

    with time_machine.travel(expires + timedelta(seconds=1), tick=False):
        assert authenticate_token(raw) is None


def test_last_use_is_written_at_most_once_a_minute(viewer_user, django_assert_num_queries):
    token, raw = new_token(viewer_user)
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        authenticate_token(raw)  # first use: written

    with time_machine.travel(start + timedelta(seconds=30), tick=False):
        with django_assert_num_queries(0):
            authenticate_token(raw)
    with time_machine.travel(start + timedelta(seconds=90), tick=False):
        with django_assert_num_queries(1):  # the last_used_at UPDATE
            authenticate_token(raw)
        with django_assert_num_queries(0):  # and remembered with it
            authenticate_token(raw)

    token.refresh_from_db()
    assert token.last_used_at == start + timedelta(seconds=90)


def test_saving_a_remembered_user_keeps_its_password(viewer_user):
    _, raw = new_token(viewer_user)
    authenticate_token(raw)
    user = authenticate_token(raw).user

    user.first_name = "Vic"
    user.save()

    viewer_user.refresh_from_db()
    assert viewer_user.first_name == "Vic"
    assert viewer_user.check_password("pw-for-tests-1")


def test_without_the_cache_every_check_reads_the_token(
    viewer_user, settings, django_assert_num_queries
):
    settings.API_TOKEN_CACHE_S = 0
    _, raw = new_token(viewer_user)
    authenticate_token(raw)

    with django_assert_num_queries(1):
        authenticate_token(raw)


def test_a_remembered_token_brings_its_users_roles(viewer_user, django_assert_num_queries):
    _, raw = new_token(viewer_user)
    authenticate_token(raw)

    with django_assert_num_queries(0):
        user = authenticate_token(raw).user
        assert has_role(user, "viewer")
        assert not has_role(user, "devops")


def test_giving_a_role_applies_at_once(viewer_user):
    _, raw = new_token(viewer_user)
    assert not has_role(authenticate_token(raw).user, "devops")

    viewer_user.groups.add(Group.objects.get_or_create(name="devops")[0])

    assert has_role(authenticate_token(raw).user, "devops")


def test_taking_a_role_from_the_groups_side_applies_at_once(viewer_user):
    _, raw = new_token(viewer_user)
    assert has_role(authenticate_token(raw).user, "viewer")

    Group.objects.get(name="viewer").user_set.remove(viewer_user)

    assert not has_role(authenticate_token(raw).user, "viewer")


def test_deleting_a_group_applies_at_once(viewer_user):
    _, raw = new_token(viewer_user)
    assert has_role(authenticate_token(raw).user, "viewer")

    Group.objects.get(name="viewer").delete()

    assert not has_role(authenticate_token(raw).user, "viewer")


def test_a_token_user_made_devops_may_write_on_the_next_request(viewer_user):
    _, raw = new_token(viewer_user, "read", "registry:write")
    client = bearer(raw)
    body = {"slug": "fresh-app", "name": "Fresh", "team": "t", "max_model_age": "P1D"}
    assert client.post(URL, body, format="json").status_code == 403

    viewer_user.groups.add(Group.objects.get_or_create(name="devops")[0])

    assert client.post(URL, body, format="json").status_code == 201
