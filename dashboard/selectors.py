"""Reads that compose registry and feedback data for pages and the status endpoint."""

from __future__ import annotations

from django.db.models import Prefetch, QuerySet

from registry.models import Application, Deployment
from registry.selectors import current_allocations


def fleet_rows() -> QuerySet[Application]:
    """Applications with their deployments and current allocations, in three queries."""
    deployments = Deployment.objects.prefetch_related(
        Prefetch("allocations", queryset=current_allocations(), to_attr="current_allocations")
    )
    return Application.objects.prefetch_related(
        Prefetch("deployments", queryset=deployments, to_attr="deployment_list")
    )
