"""Thin Celery tasks of rollout automation and alerting (STYLE R13).

Imported from feedback/tasks.py so that Celery's autodiscovery registers them.
"""

from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from .alert_evaluation import evaluate_alert_rules
from .models import Notification
from .rollout_automation import evaluate_running_rollouts
from .services.notifications import deliver_notification, due_notification_ids


@shared_task
def evaluate_rollouts_task() -> dict[str, int]:
    """Beat: advance healthy gradual rollouts; pause or roll back failing ones."""
    counts: dict[str, int] = {}
    for outcome in evaluate_running_rollouts():
        counts[outcome.action] = counts.get(outcome.action, 0) + 1
    return counts


@shared_task
def evaluate_alert_rules_task() -> dict[str, int]:
    """Beat: fire, refresh and resolve alerts from every enabled rule."""
    return evaluate_alert_rules().__dict__


@shared_task
def deliver_notification_task(notification_id: int) -> str:
    """Make one delivery attempt; schedule the next one with exponential backoff."""
    n = deliver_notification(notification_id=notification_id)
    if n.state == Notification.State.PENDING:
        # the sweeper below re-sends it too if this message is lost; the claim makes
        # a double delivery attempt impossible
        delay = max(1.0, (n.next_attempt_at - timezone.now()).total_seconds())
        deliver_notification_task.apply_async(args=[notification_id], countdown=delay)
    return n.state


@shared_task
def retry_due_notifications_task() -> int:
    """Beat: re-enqueue pending notifications whose next attempt is due."""
    ids = due_notification_ids()
    for pk in ids:
        deliver_notification_task.delay(pk)
    return len(ids)
