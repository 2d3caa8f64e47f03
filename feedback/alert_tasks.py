"""Thin Celery tasks of rollout automation and alerting (STYLE R13).

Imported from feedback/tasks.py so that Celery's autodiscovery registers them.
"""

from __future__ import annotations

from celery import shared_task

from .rollout_automation import evaluate_running_rollouts


@shared_task
def evaluate_rollouts_task() -> dict[str, int]:
    """Beat: advance healthy gradual rollouts; pause or roll back failing ones."""
    counts: dict[str, int] = {}
    for outcome in evaluate_running_rollouts():
        counts[outcome.action] = counts.get(outcome.action, 0) + 1
    return counts
