"""Alert notifications: queued per channel, delivered by Celery, every attempt recorded.

Webhooks are signed so a receiver can trust them:

    X-Modelops-Event:     alert.firing | alert.resolved
    X-Modelops-Delivery:  <uuid>, the same on every retry of one notification (dedupe on it)
    X-Modelops-Timestamp: <unix seconds of this attempt>
    X-Modelops-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>." + raw body)>

A receiver recomputes the HMAC over the timestamp and the raw body, compares in constant
time and refuses timestamps older than a few minutes (replays).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from ..models import Alert, AlertRule, Notification, NotificationAttempt, NotificationChannel

MAX_ATTEMPTS = 5
BACKOFF_BASE_S = 10  # 10, 20, 40, 80 s: below the broker's visibility timeout
CLAIM_LEASE = timedelta(seconds=60)  # a worker that dies mid-attempt is retried after this
WEBHOOK_TIMEOUT_S = 5.0
SEVERITY_RANK = {s: i for i, s in enumerate(AlertRule.Severity.values)}


def backoff(attempt: int) -> timedelta:
    """Delay after failed attempt number `attempt` (1-based): exponential."""
    return timedelta(seconds=BACKOFF_BASE_S * 2 ** (attempt - 1))


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header value for one attempt."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def alert_payload(alert: Alert, event: str) -> dict[str, Any]:
    """The JSON body of a notification (stored, so every retry sends the same bytes)."""
    return {
        "event": f"alert.{event}",
        "alert": {
            "id": alert.pk,
            "rule": alert.rule.key,
            "rule_name": alert.rule.name,
            "severity": alert.severity,
            "state": alert.state,
            "summary": alert.summary,
            "application": alert.application.slug if alert.application else None,
            "target": alert.target_key,
            "value": alert.value,
            "started_at": alert.started_at.isoformat(),
            "resolved_at": alert.resolved_at.isoformat() if alert.resolved_at else None,
            "resolution": alert.resolution,
            "evidence": alert.evidence,
        },
    }


def channels_for(alert: Alert) -> list[NotificationChannel]:
    """Enabled channels that want this alert's severity and application."""
    rank = SEVERITY_RANK[alert.severity]
    rows = NotificationChannel.objects.filter(enabled=True).filter(
        Q(application__isnull=True) | Q(application_id=alert.application_id)
    )
    return [c for c in rows if SEVERITY_RANK[c.min_severity] <= rank]


def queue_notifications(*, alert: Alert, event: str, at: datetime | None = None) -> list[int]:
    """Create one pending notification per channel and enqueue delivery after commit."""
    now = at or timezone.now()
    payload = alert_payload(alert, event)
    created = []
    for channel in channels_for(alert):
        row, new = Notification.objects.get_or_create(
            alert=alert,
            channel=channel,
            event=event,
            defaults={"payload": payload, "next_attempt_at": now},
        )
        if new:
            created.append(row.pk)
    if created:
        transaction.on_commit(lambda: _enqueue(created))
    return created


def _enqueue(ids: list[int]) -> None:
    from ..alert_tasks import deliver_notification_task

    for pk in ids:
        deliver_notification_task.delay(pk)


# --- Delivery ---


def _send_webhook(channel: NotificationChannel, n: Notification) -> tuple[bool, int | None, str]:
    body = json.dumps(n.payload, sort_keys=True, separators=(",", ":")).encode()
    timestamp = str(int(time.time()))
    request = urllib.request.Request(  # noqa: S310 - devops-configured http(s) URL
        channel.target,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": "modelops-dashboard/1",
            "X-Modelops-Event": n.payload["event"],
            "X-Modelops-Delivery": str(n.delivery_id),
            "X-Modelops-Timestamp": timestamp,
            "X-Modelops-Signature": sign(channel.secret, timestamp, body),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_S) as response:  # noqa: S310
            return 200 <= response.status < 300, response.status, ""
    except urllib.error.HTTPError as exc:
        return False, exc.code, f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return False, None, str(getattr(exc, "reason", exc))[:500]


def _send_email(channel: NotificationChannel, n: Notification) -> tuple[bool, int | None, str]:
    alert = n.payload["alert"]
    state = "RESOLVED" if n.event == Notification.Event.RESOLVED else alert["severity"].upper()
    subject = f"[{state}] {alert['rule_name']}: {alert['summary']}"[:200]
    lines = [f"{k}: {v}" for k, v in alert.items() if k != "evidence"]
    lines += ["", "evidence:", json.dumps(alert["evidence"], indent=2, sort_keys=True)]
    recipients = [a.strip() for a in channel.target.split(",") if a.strip()]
    try:
        send_mail(subject, "\n".join(lines), settings.DEFAULT_FROM_EMAIL, recipients)
    except (OSError, ValueError) as exc:
        return False, None, str(exc)[:500]
    return True, None, ""


def deliver_notification(*, notification_id: int, now: datetime | None = None) -> Notification:
    """Make one attempt if the notification is pending and due; record it either way."""
    now = now or timezone.now()
    # Claim by compare-and-set: a second worker (redelivered message, sweeper) finds it taken.
    claimed = Notification.objects.filter(
        pk=notification_id, state=Notification.State.PENDING, next_attempt_at__lte=now
    ).update(next_attempt_at=now + CLAIM_LEASE)
    n = Notification.objects.select_related("channel").get(pk=notification_id)
    if claimed != 1:
        return n
    started = time.monotonic()
    send = _send_webhook if n.channel.kind == NotificationChannel.Kind.WEBHOOK else _send_email
    ok, status_code, error = send(n.channel, n)
    number = n.attempts + 1
    with transaction.atomic():
        NotificationAttempt.objects.create(
            notification=n,
            number=number,
            at=now,
            ok=ok,
            status_code=status_code,
            error=error,
            duration_ms=int((time.monotonic() - started) * 1000),
        )
        n.attempts = number
        n.last_error = error
        if ok:
            n.state, n.delivered_at = Notification.State.DELIVERED, timezone.now()
        elif number >= MAX_ATTEMPTS:
            n.state = Notification.State.FAILED
        else:
            n.next_attempt_at = now + backoff(number)
        n.save(
            update_fields=[
                "attempts",
                "last_error",
                "state",
                "delivered_at",
                "next_attempt_at",
                "updated_at",
            ]
        )
    return n


def due_notification_ids(*, now: datetime | None = None, limit: int = 500) -> list[int]:
    """Pending notifications whose next attempt is due (the sweeper re-enqueues them)."""
    now = now or timezone.now()
    return list(
        Notification.objects.filter(state=Notification.State.PENDING, next_attempt_at__lte=now)
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )
