"""Outbound webhooks on registry, rollout and alert events.

How events arrive, without registry or feedback importing this app (STYLE R2):
- every registry change writes an AuditEvent (registry.services.audit.record_audit_event);
  `post_save` of AuditEvent turns the kinds in EVENT_TYPES into deliveries;
- `post_save` of feedback's Alert gives alert.firing (created) and alert.resolved.

The delivery rows are written inside the transaction of the change (an outbox: an event
and its deliveries commit or roll back together) and the Celery task is enqueued on commit.

Signing is the alert notifications' scheme (feedback.services.notifications), reused so one
receiver verifies both the same way:

    X-Modelops-Event:     e.g. version.registered, alias.moved, rollout.paused, alert.firing
    X-Modelops-Delivery:  <uuid>, the same on every retry of one delivery (dedupe on it)
    X-Modelops-Timestamp: <unix seconds of this attempt>
    X-Modelops-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>." + raw body)>

Failed attempts are retried with exponential backoff (10, 20, 40, 80 s) up to MAX_ATTEMPTS;
a beat sweeper re-enqueues due ones whose message was lost.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from feedback.models import Alert
from feedback.services.notifications import (
    CLAIM_LEASE,
    MAX_ATTEMPTS,
    WEBHOOK_TIMEOUT_S,
    alert_payload,
    backoff,
    sign,
)
from registry.models import Application, AuditEvent
from registry.roles import Actor
from registry.services import record_audit_event

from .models import EVENT_TYPES, WebhookDelivery, WebhookSubscription

log = logging.getLogger(__name__)
RESPONSE_KEEP = 2048


# --- Subscriptions (audited writes) ---


def _snapshot(sub: WebhookSubscription) -> dict[str, Any]:
    return {
        "name": sub.name,
        "url": sub.url,
        "events": sub.events,
        "application": sub.application.slug if sub.application_id else None,
        "enabled": sub.enabled,
    }


@transaction.atomic
def create_subscription(
    *,
    actor: Actor,
    name: str,
    url: str,
    events: list[str],
    application: Application | None = None,
    enabled: bool = True,
) -> WebhookSubscription:
    """Subscribe `url` to `events`; the generated secret is on the returned row only."""
    sub = WebhookSubscription.objects.create(
        name=name, url=url, events=sorted(set(events)), application=application, enabled=enabled
    )
    record_audit_event(
        actor=actor,
        kind="webhook.created",
        target=sub,
        application=application,
        after=_snapshot(sub),
    )
    return sub


@transaction.atomic
def update_subscription(
    *,
    actor: Actor,
    subscription: WebhookSubscription,
    url: str | None = None,
    events: list[str] | None = None,
    enabled: bool | None = None,
) -> WebhookSubscription:
    before = _snapshot(subscription)
    if url is not None:
        subscription.url = url
    if events is not None:
        subscription.events = sorted(set(events))
    if enabled is not None:
        subscription.enabled = enabled
    subscription.save()
    record_audit_event(
        actor=actor,
        kind="webhook.updated",
        target=subscription,
        application=subscription.application,
        before=before,
        after=_snapshot(subscription),
    )
    return subscription


@transaction.atomic
def delete_subscription(*, actor: Actor, subscription: WebhookSubscription) -> None:
    record_audit_event(
        actor=actor,
        kind="webhook.deleted",
        target=subscription,
        application=subscription.application,
        before=_snapshot(subscription),
    )
    subscription.delete()


# --- Turning events into deliveries ---


def queue_event(
    *, event: str, payload: dict[str, Any], application_id: int | None, at: datetime | None = None
) -> list[int]:
    """One pending delivery per subscription that wants the event; sent after commit."""
    if event not in EVENT_TYPES:
        return []
    subscriptions = [
        s
        for s in WebhookSubscription.objects.filter(enabled=True).only(
            "id", "events", "application_id", "enabled"
        )
        if s.wants(event, application_id)
    ]
    if not subscriptions:
        return []
    now = at or timezone.now()
    rows = WebhookDelivery.objects.bulk_create(
        [
            WebhookDelivery(subscription=s, event=event, payload=payload, next_attempt_at=now)
            for s in subscriptions
        ]
    )
    ids = [r.pk for r in rows]
    transaction.on_commit(lambda: enqueue(ids))
    return ids


def enqueue(ids: list[int], countdown: float | None = None) -> None:
    from .tasks import deliver_webhook_task

    for pk in ids:
        deliver_webhook_task.apply_async((pk,), countdown=countdown)


def audit_payload(event: AuditEvent) -> dict[str, Any]:
    application = event.application.slug if event.application_id else None
    return {
        "event": event.kind,
        "occurred_at": event.at.isoformat(),
        "application": application,
        "actor": event.actor_label,
        "target": {"type": event.target_type, "id": event.target_id, "repr": event.target_repr},
        "reason": event.reason,
        "before": event.before,
        "after": event.after,
        "audit_event": event.pk,
    }


def on_audit_event(sender: Any, instance: AuditEvent, created: bool, **kwargs: Any) -> None:
    if created and instance.kind in EVENT_TYPES:
        queue_event(
            event=instance.kind,
            payload=audit_payload(instance),
            application_id=instance.application_id,
            at=instance.at,
        )


def on_alert_saved(
    sender: Any, instance: Alert, created: bool, update_fields: Any = None, **kwargs: Any
) -> None:
    if created and instance.state == Alert.State.FIRING:
        name = "firing"
    elif (
        not created and instance.state == Alert.State.RESOLVED and "state" in (update_fields or ())
    ):
        name = "resolved"
    else:
        return
    queue_event(
        event=f"alert.{name}",
        payload={**alert_payload(instance, name), "occurred_at": timezone.now().isoformat()},
        application_id=instance.application_id,
    )


# --- Delivery ---


def _post(
    subscription: WebhookSubscription, delivery: WebhookDelivery
) -> tuple[int | None, str, str]:
    """(status code, response excerpt, error); error is empty on a 2xx."""
    body = json.dumps(
        {**delivery.payload, "delivery_id": str(delivery.delivery_id)},
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    ).encode()
    timestamp = str(int(time.time()))
    request = urllib.request.Request(  # noqa: S310 - devops-configured http(s) URL
        subscription.url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": "modelops-dashboard/1",
            "X-Modelops-Event": delivery.event,
            "X-Modelops-Delivery": str(delivery.delivery_id),
            "X-Modelops-Timestamp": timestamp,
            "X-Modelops-Signature": sign(subscription.secret, timestamp, body),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_S) as response:  # noqa: S310
            text = response.read(RESPONSE_KEEP).decode("utf-8", "replace")
            return response.status, text, "" if 200 <= response.status < 300 else "not 2xx"
    except urllib.error.HTTPError as exc:
        text = exc.read(RESPONSE_KEEP).decode("utf-8", "replace")
        return exc.code, text, f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return None, "", str(getattr(exc, "reason", exc))[:500] or type(exc).__name__


def deliver_webhook(*, delivery_id: int, now: datetime | None = None) -> WebhookDelivery | None:
    """Make one attempt if the delivery is pending and due, and record its outcome.

    Returns None when there was nothing to do (not due, already delivered, or another worker
    holds it); a failed attempt with attempts left is due again after backoff().
    """
    now = now or timezone.now()
    # Claim by compare-and-set: a redelivered message or the sweeper finds it taken.
    claimed = WebhookDelivery.objects.filter(
        pk=delivery_id, state=WebhookDelivery.State.PENDING, next_attempt_at__lte=now
    ).update(next_attempt_at=now + CLAIM_LEASE)
    if claimed != 1:
        return None
    delivery = WebhookDelivery.objects.select_related("subscription").get(pk=delivery_id)
    if not delivery.subscription.enabled:
        # disabled meanwhile: stop retrying rather than post to a receiver that was turned off
        delivery.state, delivery.last_error = WebhookDelivery.State.FAILED, "subscription disabled"
        delivery.save(update_fields=["state", "last_error", "updated_at"])
        return delivery
    status, text, error = _post(delivery.subscription, delivery)
    delivery.attempts += 1
    delivery.last_attempt_at = now
    delivery.last_status_code = status
    delivery.last_response = text
    delivery.last_error = error
    if not error:
        delivery.state, delivery.delivered_at = WebhookDelivery.State.DELIVERED, timezone.now()
    elif delivery.attempts >= MAX_ATTEMPTS:
        delivery.state = WebhookDelivery.State.FAILED
        log.warning(
            "webhook %s gave up after %s attempts: %s",
            delivery.delivery_id,
            delivery.attempts,
            error,
        )
    else:
        delivery.next_attempt_at = now + backoff(delivery.attempts)
    delivery.save()
    return delivery


def due_delivery_ids(*, now: datetime | None = None, limit: int = 500) -> list[int]:
    """Pending deliveries whose attempt is due (the sweeper re-enqueues them)."""
    return list(
        WebhookDelivery.objects.filter(
            state=WebhookDelivery.State.PENDING, next_attempt_at__lte=now or timezone.now()
        )
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )


def redeliver(*, delivery: WebhookDelivery) -> WebhookDelivery:
    """Send a failed or delivered event again, as a new attempt series with the same id."""
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        state=WebhookDelivery.State.PENDING, attempts=0, next_attempt_at=timezone.now()
    )
    transaction.on_commit(lambda: enqueue([delivery.pk]))
    delivery.refresh_from_db()
    return delivery
