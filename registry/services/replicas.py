"""What replicas report about themselves."""

from __future__ import annotations

import functools
from datetime import datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from .. import status_generation
from ..models import (
    Deployment,
    ModelVersion,
    Replica,
)


def record_heartbeat(
    *,
    deployment: Deployment,
    instance_id: str,
    host: str = "",
    url: str = "",
    model_version: ModelVersion | None = None,
    sha256: str = "",
    started_at: datetime | None = None,
    at: datetime | None = None,
) -> Replica:
    """Upsert what a replica reports, in one statement after locking its stored row.

    Heartbeats are frequent and concurrent, so they are not audited; the replica's first
    appearance is visible from its created_at. The application's status generation moves
    only when the heartbeat changes what the status shows (see _changes_status).
    """
    now = at or timezone.now()
    if model_version is not None and not sha256:
        sha256 = model_version.sha256
    replica = Replica(
        deployment=deployment,
        instance_id=instance_id,
        host=host,
        url=url,
        reported_version=model_version,
        reported_sha256=sha256.lower(),
        started_at=started_at,
        last_heartbeat_at=now,
        created_at=now,
        updated_at=now,
    )
    with transaction.atomic():
        # the row as stored, locked until commit: concurrent heartbeats of one replica
        # compare with each other's result, never with a state already overwritten
        before = _stored_locked(deployment, instance_id)
        _upsert(replica)
        if _changes_status(before, replica) or _was_stale(before[1], deployment):
            status_generation.bump([deployment.application_id])
        else:
            # it may still age past the timeout before this commits: a reader could cache
            # it as stale in between, so look again once committed
            transaction.on_commit(lambda: _bump_if_it_was_stale(before[1], deployment))
    return replica  # pk set by INSERT ... ON CONFLICT ... RETURNING


# Clocks of the processes that judge freshness may differ a little: count a heartbeat that
# arrives this close to its replica's timeout as a return from staleness.
CLOCK_MARGIN = timedelta(seconds=5)


def _changes_status(before: tuple | None, replica: Replica) -> bool:
    """True unless the replica was known, reported the same artifact, and the new heartbeat
    only moves its last heartbeat forward (then the status counts do not change, unless it
    had gone stale: see _was_stale)."""
    if before is None:
        return True  # a new replica: one more known
    sha, last_beat = before
    return (
        sha != replica.reported_sha256 or last_beat is None or replica.last_heartbeat_at < last_beat
    )


def _was_stale(last_beat: datetime, deployment: Deployment) -> bool:
    """Whether the previous heartbeat has aged past the timeout (a reader may have cached the
    replica as stale; it reports again now)."""
    return last_beat + deployment.heartbeat_timeout <= timezone.now() + CLOCK_MARGIN


def _bump_if_it_was_stale(last_beat: datetime, deployment: Deployment) -> None:
    if _was_stale(last_beat, deployment):
        status_generation.bump([deployment.application_id])


# Raw SQL for the two statements of every heartbeat: compiling them through the ORM cost
# about 1 ms of CPU per heartbeat (select_for_update().first() and bulk_create's upsert).
_UPDATED_ON_CONFLICT = [
    "host", "url", "reported_version", "reported_sha256", "started_at", "last_heartbeat_at",
    "updated_at",
]  # fmt: skip


def _stored_locked(deployment: Deployment, instance_id: str) -> tuple | None:
    """(reported_sha256, last_heartbeat_at) of the stored replica, locked until commit where
    the database can (SELECT ... FOR UPDATE), or None for a new one."""
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
    rows = Replica.objects.raw(
        "SELECT id, reported_sha256, last_heartbeat_at FROM registry_replica "
        f"WHERE deployment_id = %s AND instance_id = %s{lock}",
        [deployment.pk, instance_id],
    )
    stored = next(iter(rows), None)
    return None if stored is None else (stored.reported_sha256, stored.last_heartbeat_at)


def _upsert(replica: Replica) -> None:
    """INSERT ... ON CONFLICT (deployment, instance_id) DO UPDATE ... RETURNING id: what
    bulk_create(update_conflicts=True) sends, values prepared by the model's fields (auto_now
    included), without compiling the query each time."""
    fields, sql = _upsert_statement()
    values = [f.get_db_prep_save(f.pre_save(replica, add=True), connection) for f in fields]
    with connection.cursor() as cursor:
        cursor.execute(sql, values)
        replica.pk = cursor.fetchone()[0]
    replica._state.adding = False
    replica._state.db = connection.alias


@functools.cache
def _upsert_statement() -> tuple[list[Any], str]:
    quote = connection.ops.quote_name
    fields = [f for f in Replica._meta.concrete_fields if not f.primary_key]
    updated = [Replica._meta.get_field(name).column for name in _UPDATED_ON_CONFLICT]
    columns = ", ".join(quote(f.column) for f in fields)
    marks = ", ".join(["%s"] * len(fields))
    sql = (
        f"INSERT INTO {quote(Replica._meta.db_table)} ({columns}) VALUES ({marks}) "
        "ON CONFLICT (deployment_id, instance_id) DO UPDATE SET "
        + ", ".join(f"{quote(c)} = excluded.{quote(c)}" for c in updated)
        + " RETURNING id"
    )
    return fields, sql
