"""Reads of rollouts for the API, the dashboard and the feedback-side automation."""

from __future__ import annotations

from django.db.models import QuerySet

from .models import Rollout


def rollout_list() -> QuerySet[Rollout]:
    """Rollouts with everything their serializer shows, in one query."""
    return Rollout.objects.select_related(
        "deployment__application",
        "baseline_version__registered_model",
        "candidate_version__registered_model",
        "created_by",
    )


def running_rollouts() -> QuerySet[Rollout]:
    """Rollouts the beat automation judges: running, with what the analysis needs."""
    return rollout_list().filter(state=Rollout.State.RUNNING).order_by("pk")
