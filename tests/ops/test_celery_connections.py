"""A Celery worker keeps its database connection between tasks, as gunicorn does between
requests, and still drops one that broke."""

from types import SimpleNamespace

import pytest
from celery.fixups.django import DjangoWorkerFixup
from django.db import connection, transaction

from dashboard.celery import app, reuse_healthy_connections
from tests.markers import needs_postgres

# closing SQLite's in-memory test database would drop it: PostgreSQL only
pytestmark = [pytest.mark.django_db(transaction=True), needs_postgres]

TASK = SimpleNamespace(request=SimpleNamespace(is_eager=False))


def _between_tasks() -> None:
    """What the worker runs after one task and before the next."""
    fixup = DjangoWorkerFixup(app)
    fixup.on_task_postrun(sender=TASK)
    reuse_healthy_connections(sender=TASK)
    fixup.on_task_prerun(sender=TASK)
    reuse_healthy_connections(sender=TASK)


def test_a_worker_reuses_its_database_connection_for_the_next_task(settings):
    settings.DATABASES["default"]["CONN_MAX_AGE"] = 60
    connection.close()
    connection.ensure_connection()
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    first = connection.connection

    _between_tasks()

    assert connection.connection is first


def test_a_worker_drops_a_broken_connection_before_the_next_task(settings):
    settings.DATABASES["default"]["CONN_MAX_AGE"] = 60
    connection.close()
    connection.ensure_connection()
    connection.connection.close()  # e.g. the server restarted under it
    connection.errors_occurred = True

    _between_tasks()

    assert connection.connection is None


def test_an_eager_task_leaves_its_callers_transaction_alone():
    eager = SimpleNamespace(request=SimpleNamespace(is_eager=True))
    with transaction.atomic():
        first = connection.connection

        reuse_healthy_connections(sender=eager)

        assert connection.connection is first
