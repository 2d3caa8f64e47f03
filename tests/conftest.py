"""Shared fixtures: users per role, API clients (session and bearer token), factories.

Factories are registered as fixtures by pytest-factoryboy: `application_factory`,
`model_version_factory`, ... and single instances `application`, `model_version`, ...
"""

import os
import uuid

import pytest
from pytest_factoryboy import register
from rest_framework.test import APIClient

from registry.roles import Actor
from registry.services import create_api_token
from tests.factories import registry as rf

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # Playwright's sync API runs a loop

register(rf.UserFactory)
register(rf.ApplicationFactory)
register(rf.RegisteredModelFactory)
register(rf.ModelVersionFactory)
register(rf.DeploymentFactory)
register(rf.TrafficAllocationFactory)
register(rf.ReplicaFactory)
register(rf.RolloutFactory)


@pytest.fixture(autouse=True)
def _own_status_cache(settings):
    """A status-cache namespace per test: rows a test rolls back never bump a generation."""
    settings.STATUS_CACHE_KEY_PREFIX = f"status-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    """PBKDF2 costs ~1 s per user on these machines; tests need a hash, not its strength."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def devops_user(db):
    return rf.UserFactory(username="dora-devops", roles=["devops"])


@pytest.fixture
def product_user(db):
    return rf.UserFactory(username="pat-product", roles=["product"])


@pytest.fixture
def viewer_user(db):
    return rf.UserFactory(username="vic-viewer", roles=["viewer"])


@pytest.fixture
def system_actor():
    return Actor.system("tests")


@pytest.fixture
def devops_actor(devops_user):
    return Actor.of(devops_user)


@pytest.fixture
def make_token(db):
    """make_token(user, *scopes) -> raw bearer token."""

    def make(user, *scopes):
        _, raw = create_api_token(
            actor=Actor.system("tests"), user=user, name="test", scopes=list(scopes) or ["read"]
        )
        return raw

    return make


@pytest.fixture
def token_client(make_token):
    """token_client(user, *scopes) -> APIClient sending `Authorization: Bearer ...`."""

    def make(user, *scopes):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_token(user, *scopes)}")
        return client

    return make


@pytest.fixture
def api_client(devops_user):
    """A session-authenticated (browser-like) devops client."""
    client = APIClient()
    client.force_authenticate(devops_user)
    return client


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    return {
        **browser_type_launch_args,
        "executable_path": os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"),
        "args": [
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-quic",
        ],
    }


def pytest_collection_modifyitems(items):
    """Every test may use the database; tests that need real commits mark transaction=True."""
    chromium = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
    no_browser = pytest.mark.skip(
        reason=f"no Chromium at {chromium} (apt-get install chromium runs the browser tests)"
    )
    for item in items:
        if item.get_closest_marker("django_db") is None:
            item.add_marker(pytest.mark.django_db)
        if item.get_closest_marker("browser") is not None and not os.access(chromium, os.X_OK):
            item.add_marker(no_browser)
