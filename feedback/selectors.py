"""Every read of feedback data that a page, endpoint or other app needs; N+1-free."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from .models import IngestBatch


def ingest_batch_list(*, user: Any) -> QuerySet[IngestBatch]:
    """Batches the user may see (devops: all; others: their own), without the raw bytes."""
    return (
        IngestBatch.objects.without_raw()
        .visible_to(user)
        .select_related("default_application", "feedback_source", "created_by")
    )
