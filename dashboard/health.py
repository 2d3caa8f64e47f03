"""Liveness and readiness probes: callers read only the status code (200 / 503)."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.executor import MigrationExecutor
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache

log = logging.getLogger(__name__)


@never_cache
def livez(request: HttpRequest) -> JsonResponse:
    """The process answers; no dependency is checked."""
    return JsonResponse({"status": "ok"})


def _database_ok() -> tuple[bool, str]:
    try:
        connection = connections[DEFAULT_DB_ALIAS]
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        executor = MigrationExecutor(connection)
        pending = executor.migration_plan(executor.loader.graph.leaf_nodes())
    except Exception as exc:  # any failure means "not ready", never a 500
        log.warning("readyz: database check failed: %s", exc)
        return False, f"database unreachable: {type(exc).__name__}"
    if pending:
        return False, f"{len(pending)} migration(s) not applied"
    return True, "ok"


def _broker_ok() -> tuple[bool, str]:
    from dashboard.celery import app

    try:
        # One quick attempt: a probe that waits out retry back-offs would time out itself.
        with app.connection_for_write(settings.CELERY_BROKER_URL) as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=2)
    except Exception as exc:
        log.warning("readyz: broker check failed: %s", exc)
        return False, f"broker unreachable: {type(exc).__name__}"
    return True, "ok"


@never_cache
def readyz(request: HttpRequest) -> JsonResponse:
    """Database reachable with every migration applied, and the Celery broker reachable."""
    db_ok, db_msg = _database_ok()
    broker_ok, broker_msg = _broker_ok()
    ok = db_ok and broker_ok
    return JsonResponse(
        {"status": "ok" if ok else "unavailable", "database": db_msg, "broker": broker_msg},
        status=200 if ok else 503,
    )
