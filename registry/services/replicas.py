"""What replicas report about themselves."""

from __future__ import annotations

from datetime import datetime

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
    """Upsert what a replica reports, in ONE statement (no read-modify-write race).

    Heartbeats are frequent and concurrent, so they are not audited; the replica's first
    appearance is visible from its created_at.
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
    Replica.objects.bulk_create(
        [replica],
        update_conflicts=True,
        unique_fields=["deployment", "instance_id"],
        update_fields=[
            "host",
            "url",
            "reported_version",
            "reported_sha256",
            "started_at",
            "last_heartbeat_at",
            "updated_at",
        ],
    )
    # an upsert sends no signal; it may change the replica counts (new, fresh again, other sha)
    status_generation.bump([deployment.application_id])
    return replica  # pk set by INSERT ... ON CONFLICT ... RETURNING
