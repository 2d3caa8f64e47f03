"""Every read of feedback data that a page, endpoint or other app needs; N+1-free."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, QuerySet, Sum
from django.utils import timezone

from .models import FeedbackReport, FeedbackSource, IngestBatch, QualityRollup
from .statistics import wilson_interval

ONLINE_WINDOW = timedelta(days=7)  # the window of "online accuracy" on status pages


def ingest_batch_list(*, user: Any) -> QuerySet[IngestBatch]:
    """Batches the user may see (devops: all; others: their own), without the raw bytes."""
    return (
        IngestBatch.objects.without_raw()
        .visible_to(user)
        .select_related("default_application", "feedback_source", "created_by")
    )


# --- Online quality, from hourly rollups only ---


@dataclass(frozen=True)
class Rate:
    """A proportion with its 95 % Wilson interval (None values while nothing was counted)."""

    successes: int
    trials: int

    @property
    def value(self) -> float | None:
        return self.successes / self.trials if self.trials else None

    @property
    def interval(self) -> tuple[float, float] | None:
        return wilson_interval(self.successes, self.trials)


@dataclass(frozen=True)
class Quality:
    """What the field said about one model version of one application over a window."""

    counts: dict[str, int] = field(default_factory=dict)
    correct: int = 0
    labelled: int = 0

    @property
    def online_accuracy(self) -> Rate:
        return Rate(self.correct, self.labelled)

    @property
    def conversion_rate(self) -> Rate:
        return Rate(self.counts.get("conversion", 0), self.counts.get("impression", 0))

    @property
    def click_through_rate(self) -> Rate:
        return Rate(self.counts.get("click", 0), self.counts.get("impression", 0))

    @property
    def bad_recommendation_rate(self) -> Rate:
        return Rate(self.counts.get("bad_recommendation", 0), self.counts.get("impression", 0))


def quality_by_version(
    pairs: Iterable[tuple[int, int]], *, since: datetime | None = None
) -> dict[tuple[int, int], Quality]:
    """Quality per (application id, model version id) since `since`, in one query."""
    wanted = set(pairs)
    if not wanted:
        return {}
    since = since or timezone.now() - ONLINE_WINDOW
    rows = (
        QualityRollup.objects.since(since)
        .filter(
            application_id__in={a for a, _ in wanted},
            model_version_id__in={m for _, m in wanted},
        )
        .values("application_id", "model_version_id", "kind")
        .annotate(n=Sum("count"), correct=Sum("correct"), labelled=Sum("labelled"))
        .order_by()
    )
    acc: dict[tuple[int, int], dict[str, Any]] = {}
    for row in rows:
        key = (row["application_id"], row["model_version_id"])
        if key not in wanted:
            continue
        slot = acc.setdefault(key, {"counts": {}, "correct": 0, "labelled": 0})
        slot["counts"][row["kind"]] = row["n"]
        slot["correct"] += row["correct"]
        slot["labelled"] += row["labelled"]
    return {key: Quality(**slot) for key, slot in acc.items()}


def online_accuracy_by_version(
    pairs: Iterable[tuple[int, int]], since: datetime | None = None
) -> dict[tuple[int, int], float]:
    """Online accuracy (correct / labelled) per (application id, version id), in one query.

    Pairs without labelled feedback in the window are absent, so callers show "no data".
    """
    out = {}
    for key, quality in quality_by_version(pairs, since=since).items():
        value = quality.online_accuracy.value
        if value is not None:
            out[key] = value
    return out


# --- Reports ---


def report_list() -> QuerySet[FeedbackReport]:
    """Reports with everything their list row shows, newest first."""
    return FeedbackReport.objects.select_related(
        "application",
        "model_version__registered_model",
        "reported_by",
        "acknowledged_by",
        "resolved_by",
    )


def report_counts() -> dict[str, int]:
    """{state: number of reports}, every state present, in one query."""
    counts = dict.fromkeys(FeedbackReport.State.values, 0)
    rows = FeedbackReport.objects.order_by().values_list("state").annotate(n=Count("pk"))
    counts.update(dict(rows))
    return counts


def sources_of(application: Any) -> QuerySet[FeedbackSource]:
    """An application's pull sources with their last success and error."""
    return FeedbackSource.objects.filter(application=application).order_by("name")
