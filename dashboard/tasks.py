"""Celery tasks of the dashboard app: outbound webhook delivery (thin: lookup, call, retry)."""

from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from . import webhooks
from .models import WebhookDelivery


@shared_task(ignore_result=True)
def deliver_webhook_task(delivery_id: int) -> str:
    """One attempt; a failure with attempts left schedules the next one after its backoff."""
    delivery = webhooks.deliver_webhook(delivery_id=delivery_id)
    if delivery is None:
        return "skipped"  # not due, done, gone, or claimed by another worker
    if delivery.state == WebhookDelivery.State.PENDING and delivery.attempts:
        wait = max((delivery.next_attempt_at - timezone.now()).total_seconds(), 0)
        webhooks.enqueue([delivery.pk], countdown=wait)
    return delivery.state


@shared_task(ignore_result=True)
def retry_due_webhooks_task() -> int:
    """Sweeper: re-enqueue due deliveries whose message was lost (a restarted worker)."""
    ids = webhooks.due_delivery_ids()
    webhooks.enqueue(ids)
    return len(ids)
