"""Reusable query vocabulary for feedback models (no writes, no side effects)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from django.db import models
from django.db.models import Q

if TYPE_CHECKING:
    from .models import FeedbackEvent, IngestBatch, QualityRollup  # noqa: F401


class IngestBatchQuerySet(models.QuerySet["IngestBatch"]):
    def without_raw(self) -> IngestBatchQuerySet:
        """Never drag the submission bytes into a page or a list."""
        return self.defer("raw")

    def open(self) -> IngestBatchQuerySet:
        return self.filter(state__in=["pending", "processing"])

    def stale(self, *, now: datetime, pending_for: timedelta, claim_timeout: timedelta):
        """Pending too long (its message may be lost), or claimed by a worker that died."""
        return self.filter(
            Q(state="pending", created_at__lt=now - pending_for)
            | Q(state="processing", claimed_at__lt=now - claim_timeout)
        )

    def visible_to(self, user) -> IngestBatchQuerySet:
        from registry.roles import is_devops

        return self if is_devops(user) else self.filter(created_by=user)


class FeedbackEventQuerySet(models.QuerySet["FeedbackEvent"]):
    def older_than(self, cutoff: datetime) -> FeedbackEventQuerySet:
        return self.filter(occurred_at__lt=cutoff)


class QualityRollupQuerySet(models.QuerySet["QualityRollup"]):
    def since(self, since: datetime) -> QualityRollupQuerySet:
        return self.filter(hour__gte=since)
