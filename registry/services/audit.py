"""Audit log writes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.utils import timezone

from ..models import (
    Application,
    AuditEvent,
)
from ..roles import Actor


def record_audit_event(
    *,
    actor: Actor,
    kind: str,
    target: Any,
    application: Application | None = None,
    reason: str = "",
    before: Any = None,
    after: Any = None,
    at: datetime | None = None,
) -> AuditEvent:
    """Append one audit event; callers run it inside the transaction of the change itself."""
    return AuditEvent.objects.create(
        at=at or timezone.now(),
        actor=actor.user,
        actor_label=actor.label[:150],
        kind=kind,
        application=application,
        target_type=type(target).__name__,
        target_id=str(getattr(target, "pk", "")),
        target_repr=str(target)[:255],
        reason=reason,
        before=before,
        after=after,
    )
