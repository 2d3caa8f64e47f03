"""Outbound webhooks: subscriptions to registry, rollout and alert events, and their deliveries.

They live in the dashboard app because it is the one app allowed to import both others
(STYLE R2): registry and feedback never learn that anyone listens.
"""

from __future__ import annotations

import secrets
import uuid

from django.db import models

from registry.models import Application, TimestampedModel

EVENT_TYPES = (
    "version.registered",
    "alias.moved",
    "allocation.changed",
    "rollout.created",
    "rollout.running",
    "rollout.advanced",
    "rollout.paused",
    "rollout.promoted",
    "rollout.rolled_back",
    "rollout.aborted",
    "alert.firing",
    "alert.resolved",
)


def new_secret() -> str:
    return secrets.token_urlsafe(32)


class WebhookSubscription(TimestampedModel):
    """A receiver URL and the event types it wants ("rollout.*" and "*" match families)."""

    name = models.CharField(max_length=100, unique=True)
    url = models.URLField(max_length=500, help_text="POSTed a JSON body per event.")
    secret = models.CharField(
        max_length=200,
        default=new_secret,
        help_text="HMAC-SHA256 key of the X-Modelops-Signature header.",
    )
    events = models.JSONField(
        default=list,
        help_text='Event types, e.g. ["alias.moved", "rollout.*"]; "*" for all.',
    )
    application = models.ForeignKey(
        Application,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
        help_text="Only this application's events (empty: every application).",
    )
    enabled = models.BooleanField(default=True)

    def __str__(self) -> str:
        return self.name

    def wants(self, event: str, application_id: int | None) -> bool:
        if not self.enabled:
            return False
        if self.application_id and self.application_id != application_id:
            return False
        family = event.split(".", 1)[0] + ".*"
        return any(p in ("*", event, family) for p in self.events)


class WebhookDelivery(TimestampedModel):
    """One event for one subscription: the exact body, every attempt's outcome, the last answer."""

    class State(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        FAILED = "failed"

    delivery_id = models.UUIDField(unique=True, default=uuid.uuid4, editable=False)
    subscription = models.ForeignKey(
        WebhookSubscription, on_delete=models.CASCADE, related_name="deliveries"
    )
    event = models.CharField(max_length=64)
    payload = models.JSONField(help_text="The exact body sent on every attempt.")
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(db_index=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_response = models.TextField(blank=True, help_text="First 2 KB of the last answer.")
    last_error = models.TextField(blank=True)

    class Meta:
        verbose_name_plural = "webhook deliveries"
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                condition=models.Q(state="pending"),
                name="dashboard_webhook_due",
            )
        ]

    def __str__(self) -> str:
        return f"{self.event} → {self.subscription_id} ({self.state})"
