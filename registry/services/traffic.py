"""Traffic allocation of deployments, versioned over time."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from .. import status_generation
from ..exceptions import InvalidInput
from ..models import (
    Deployment,
    ModelVersion,
    TrafficAllocation,
)
from ..roles import Actor
from .audit import record_audit_event


@dataclass(frozen=True)
class AllocationSpec:
    """One row of a desired traffic split."""

    model_version: ModelVersion
    weight: int
    role: str = TrafficAllocation.Role.CONTROL


def validate_allocation(specs: Sequence[AllocationSpec]) -> None:
    """Raise InvalidInput unless live weights sum to 100 and each version appears once."""
    if not specs:
        raise InvalidInput("a deployment needs at least one allocation", field="allocations")
    seen: set[int] = set()
    for spec in specs:
        if spec.model_version.pk in seen:
            raise InvalidInput(
                f"{spec.model_version} appears twice in the allocation", field="allocations"
            )
        seen.add(spec.model_version.pk)
        if not 0 <= spec.weight <= 100:
            raise InvalidInput("weights are percentages between 0 and 100", field="allocations")
        if spec.role not in TrafficAllocation.Role.values:
            raise InvalidInput(f"unknown role {spec.role!r}", field="allocations")
    live = sum(s.weight for s in specs if s.role != TrafficAllocation.Role.SHADOW)
    if live != 100:
        raise InvalidInput(
            f"weights of non-shadow allocations must sum to 100, got {live}", field="allocations"
        )


def _allocation_snapshot(rows: Iterable[TrafficAllocation]) -> list[dict[str, Any]]:
    return [
        {
            "model": r.model_version.registered_model.name,
            "version": r.model_version.version,
            "weight": r.weight,
            "role": r.role,
        }
        for r in rows
    ]


@transaction.atomic
def set_allocation(
    *,
    actor: Actor,
    deployment: Deployment,
    allocations: Sequence[AllocationSpec],
    reason: str = "",
    kind: str = "allocation.changed",
    at: datetime | None = None,
) -> list[TrafficAllocation]:
    """Replace a deployment's traffic split: close the current rows, open the new ones."""
    validate_allocation(allocations)
    # Serialize concurrent changes of the same deployment.
    Deployment.objects.select_for_update().filter(pk=deployment.pk).first()
    now = at or timezone.now()
    current = list(
        deployment.allocations.filter(valid_to__isnull=True).select_related(
            "model_version__registered_model"
        )
    )
    before = _allocation_snapshot(current)
    TrafficAllocation.objects.filter(pk__in=[r.pk for r in current]).update(valid_to=now)
    rows = TrafficAllocation.objects.bulk_create(
        [
            TrafficAllocation(
                deployment=deployment,
                model_version=s.model_version,
                weight=s.weight,
                role=s.role,
                valid_from=now,
            )
            for s in allocations
        ]
    )
    status_generation.bump([deployment.application_id])  # bulk writes send no signals
    record_audit_event(
        actor=actor,
        kind=kind,
        target=deployment,
        application=deployment.application,
        reason=reason,
        before=before,
        after=_allocation_snapshot(rows),
        at=now,
    )
    return rows
