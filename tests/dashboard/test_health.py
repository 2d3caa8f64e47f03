import socket

import pytest
from django.db.migrations.executor import MigrationExecutor
from django.urls import reverse


@pytest.fixture
def closed_port():
    """A local TCP port with nothing listening on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_livez_answers_200_without_login(client):
    response = client.get(reverse("livez"))

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_answers_200_when_database_and_broker_are_up(client):
    response = client.get(reverse("readyz"))

    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_readyz_answers_503_when_the_broker_is_unreachable(client, settings, closed_port):
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{closed_port}/0"

    response = client.get(reverse("readyz"))

    assert response.status_code == 503
    assert response.json()["broker"].startswith("broker unreachable")


def test_readyz_answers_503_when_migrations_are_pending(client, monkeypatch):
    def one_pending_migration(self, targets, clean_start=False):
        return [("pretend-migration", False)]

    monkeypatch.setattr(MigrationExecutor, "migration_plan", one_pending_migration)

    response = client.get(reverse("readyz"))

    assert response.status_code == 503
    assert response.json()["database"] == "1 migration(s) not applied"


def test_readyz_is_never_cached(client):
    response = client.get(reverse("readyz"))

    assert "no-cache" in response["Cache-Control"]
