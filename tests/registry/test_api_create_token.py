"""`manage.py create_token` prints only a working token."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from registry.models import ApiToken
from registry.services import authenticate_token


def run(*args):
    out = StringIO()
    call_command("create_token", *args, stdout=out)
    return out.getvalue()


def test_create_token_prints_only_the_token(product_user):
    out = run(product_user.username, "--scope", "read", "--scope", "feedback:write")

    raw = out.strip()
    assert out == raw + "\n"
    assert raw.startswith("mo_")
    token = authenticate_token(raw)
    assert token.user == product_user
    assert token.scopes == ["feedback:write", "read"]


def test_create_token_honours_name_and_days(product_user):
    run(product_user.username, "--name", "ci-pipeline", "--days", "7")

    token = ApiToken.objects.get(name="ci-pipeline")
    assert token.scopes == ["read"]
    assert 6.9 < (token.expires_at - token.created_at).total_seconds() / 86400 <= 7


def test_create_token_unknown_user_is_an_error():
    with pytest.raises(CommandError, match="no active user"):
        run("nobody")


def test_create_token_unknown_scope_is_an_error(product_user):
    with pytest.raises(CommandError, match="unknown scope"):
        run(product_user.username, "--scope", "admin")

    assert not ApiToken.objects.exists()


def test_create_token_rejects_non_positive_days(product_user):
    with pytest.raises(CommandError):
        run(product_user.username, "--days", "0")
