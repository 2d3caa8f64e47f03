"""Probes with a dependency really down: the database (a closed port), the broker."""

import socket

import pytest
from django.db import connections

from tests.markers import needs_postgres


@pytest.fixture
def closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def database_down(closed_port):
    """Point the default connection at a port where nothing listens, then restore it."""
    connection = connections["default"]
    saved = dict(connection.settings_dict)
    connection.close()
    connection.settings_dict.update(HOST="127.0.0.1", PORT=str(closed_port))
    yield
    connection.close()
    connection.settings_dict.clear()
    connection.settings_dict.update(saved)


@needs_postgres
@pytest.mark.django_db(transaction=True)
def test_readyz_is_503_while_the_database_is_down_and_livez_still_200(client, database_down):
    ready = client.get("/readyz")
    live = client.get("/livez")

    assert ready.status_code == 503
    assert ready.json()["database"].startswith("database unreachable")
    assert live.status_code == 200


def test_readyz_is_503_when_both_are_down_and_names_both(client, settings, closed_port):
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{closed_port}/0"

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["broker"].startswith("broker unreachable")
