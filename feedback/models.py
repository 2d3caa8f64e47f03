"""Feedback data: raw events, the batches that carried them, pull sources, human reports and
the hourly rollups that every chart and statistic reads.

Models hold data and invariants only; every write goes through feedback.services.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.db.models import Q

from registry.models import Application, Deployment, ModelVersion, TimestampedModel

from .querysets import FeedbackEventQuerySet, IngestBatchQuerySet, QualityRollupQuerySet


class FeedbackKind(models.TextChoices):
    IMPRESSION = "impression"
    CLICK = "click"
    CONVERSION = "conversion"
    BAD_RECOMMENDATION = "bad_recommendation"
    LABEL = "label"
    PREDICTION = "prediction"


# --- Ingest ---


class FeedbackSource(TimestampedModel):
    """An endpoint that beat polls for events: an HTTP JSON feed with a cursor, or a CSV URL."""

    class Kind(models.TextChoices):
        HTTP_JSON = "http_json", "HTTP JSON endpoint (cursor)"
        CSV_URL = "csv_url", "CSV file URL"

    application = models.ForeignKey(
        Application,
        on_delete=models.CASCADE,
        related_name="feedback_sources",
        help_text="Events without an `application` field belong to this one.",
    )
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.HTTP_JSON)
    url = models.URLField(max_length=500)
    headers = models.JSONField(default=dict, blank=True, help_text="Extra request headers.")
    interval = models.DurationField(help_text="Time between two successful polls.")
    enabled = models.BooleanField(default=True)
    cursor = models.CharField(
        max_length=255, blank=True, help_text="High-water mark: the last cursor / occurred_at seen."
    )
    next_poll_at = models.DateTimeField(null=True, blank=True, db_index=True)
    consecutive_failures = models.PositiveIntegerField(default=0)
    last_polled_at = models.DateTimeField(null=True, blank=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)

    class Meta:
        ordering = ["application_id", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["application", "name"], name="%(app_label)s_%(class)s_unique_name"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.application.slug}/{self.name}"


class IngestBatch(models.Model):
    """The durable record of one accepted submission, written once before any parsing.

    `raw` holds the request or file bytes as received; the ingest task expands them into
    events and writes the outcome (counts, per-event errors) back here.
    """

    class Source(models.TextChoices):
        API = "api"
        UPLOAD = "upload"
        PULL = "pull"

    class Format(models.TextChoices):
        JSON = "json"
        JSONL = "jsonl"
        CSV = "csv"

    class State(models.TextChoices):
        PENDING = "pending"
        PROCESSING = "processing"
        DONE = "done"
        FAILED = "failed"

    source = models.CharField(max_length=16, choices=Source.choices, default=Source.API)
    format = models.CharField(max_length=8, choices=Format.choices, default=Format.JSON)
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    raw = models.BinaryField(help_text="The submission's bytes, exactly as received.")
    raw_size = models.PositiveIntegerField(default=0)
    raw_sha256 = models.CharField(max_length=64, blank=True)
    filename = models.CharField(max_length=255, blank=True)
    default_application = models.ForeignKey(
        Application,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Applies to events that name no application (uploads, pull sources).",
    )
    feedback_source = models.ForeignKey(
        FeedbackSource, null=True, blank=True, on_delete=models.SET_NULL, related_name="batches"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    idempotency_key = models.CharField(max_length=255, blank=True)
    request_id = models.CharField(
        max_length=128,
        blank=True,
        help_text="X-Request-ID of the submission; the worker logs the batch's expansion "
        "under it, though one task expands many batches.",
    )
    created_at = models.DateTimeField(db_index=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    total = models.PositiveIntegerField(default=0)
    accepted = models.PositiveIntegerField(default=0)
    duplicate = models.PositiveIntegerField(default=0)
    rejected = models.PositiveIntegerField(default=0)
    errors = models.JSONField(default=list, blank=True, help_text="[{index, field, message}]")
    last_error = models.TextField(blank=True)

    objects = IngestBatchQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["created_by", "idempotency_key"],
                condition=~Q(idempotency_key=""),
                name="%(app_label)s_%(class)s_unique_idempotency_key",
            ),
        ]
        indexes = [
            models.Index(
                fields=["state", "created_at"],
                condition=Q(state__in=["pending", "processing"]),
                name="feedback_batch_open",
            )
        ]

    def __str__(self) -> str:
        return f"batch {self.pk} ({self.source}, {self.state})"

    @property
    def is_open(self) -> bool:
        return self.state in (self.State.PENDING, self.State.PROCESSING)


class FeedbackEvent(models.Model):
    """One thing that happened in the field, as a client reported it.

    `event_id` is the client's key and the primary key: re-sent events collide on it and are
    counted once. Secondary indexes are few on purpose, since every one slows ingest.
    """

    event_id = models.UUIDField(primary_key=True)
    # Indexed by migration 0006: BRIN on PostgreSQL (events arrive roughly in occurred_at
    # order; a btree took random inserts for every event), btree elsewhere.
    occurred_at = models.DateTimeField()
    received_at = models.DateTimeField()
    # No database FK constraints on this table: each one costs a lookup per inserted row at
    # commit. The ingest worker checks both ids in the same transaction; Django still
    # enforces on_delete when an application or version is deleted.
    application = models.ForeignKey(
        Application,
        on_delete=models.CASCADE,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    model_version = models.ForeignKey(
        ModelVersion,
        on_delete=models.PROTECT,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    kind = models.CharField(max_length=24, choices=FeedbackKind.choices)
    value = models.FloatField(null=True, blank=True)
    prediction = models.JSONField(null=True, blank=True)
    label = models.JSONField(null=True, blank=True)
    correct = models.BooleanField(
        null=True, blank=True, help_text="prediction == label, when both are known."
    )
    request_id = models.CharField(max_length=128, blank=True)
    segment = models.CharField(max_length=64, blank=True)
    payload = models.JSONField(null=True, blank=True)
    batch = models.ForeignKey(
        IngestBatch,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )

    objects = FeedbackEventQuerySet.as_manager()

    class Meta:
        ordering = ["-occurred_at"]
        indexes = [
            # delayed labels find their prediction by request id
            models.Index(
                fields=["request_id"],
                condition=Q(kind="prediction"),
                name="feedback_event_prediction_req",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.event_id}"


# --- Aggregates ---


class QualityRollup(models.Model):
    """Per (application, model version, kind, hour): the sums every statistic is derived from."""

    application = models.ForeignKey(Application, on_delete=models.CASCADE, related_name="+")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=24, choices=FeedbackKind.choices)
    hour = models.DateTimeField()
    count = models.BigIntegerField(default=0)
    sum = models.FloatField(default=0.0)
    sum_sq = models.FloatField(default=0.0)
    correct = models.BigIntegerField(default=0)
    labelled = models.BigIntegerField(default=0)

    objects = QualityRollupQuerySet.as_manager()

    class Meta:
        ordering = ["application_id", "model_version_id", "kind", "hour"]
        constraints = [
            models.UniqueConstraint(
                fields=["application", "model_version", "kind", "hour"],
                name="%(app_label)s_%(class)s_unique_bucket",
            ),
        ]
        indexes = [models.Index(fields=["model_version", "hour"], name="feedback_rollup_mv_hour")]

    def __str__(self) -> str:
        return f"{self.application_id}/{self.model_version_id} {self.kind} {self.hour:%Y-%m-%d %H}h"


# --- Reports from people ---


class FeedbackReport(TimestampedModel):
    """A product team's report of a problem with a model, triaged open → acknowledged → resolved."""

    class Kind(models.TextChoices):
        BAD_RECOMMENDATION = "bad_recommendation", "Bad recommendation"
        CONVERSION_DROP = "conversion_drop", "Conversion drop"
        OTHER = "other", "Other"

    class Severity(models.TextChoices):
        LOW = "low"
        MEDIUM = "medium"
        HIGH = "high"
        CRITICAL = "critical"

    class State(models.TextChoices):
        OPEN = "open"
        ACKNOWLEDGED = "acknowledged"
        RESOLVED = "resolved"

    application = models.ForeignKey(
        Application, on_delete=models.CASCADE, related_name="feedback_reports"
    )
    model_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    kind = models.CharField(max_length=24, choices=Kind.choices)
    severity = models.CharField(max_length=16, choices=Severity.choices, default=Severity.MEDIUM)
    title = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    example_request_ids = models.JSONField(default=list, blank=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.OPEN)
    reported_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolution = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["state", "-created_at"], name="feedback_report_state")]

    def __str__(self) -> str:
        return f"#{self.pk} {self.title}"


# --- Alerts ---


class AlertRule(TimestampedModel):
    """A condition on a quality metric that raises an Alert per target while it holds.

    Direction follows the metric: rates that should be high (accuracy, conversion, clicks)
    breach when they fall, the others (model age, bad recommendations, replica mismatch)
    when they rise. `threshold` is an absolute value for the `absolute` comparison and a
    relative change (0.05 = 5 %) for the comparisons against a baseline or a control arm.
    """

    class Metric(models.TextChoices):
        MODEL_AGE = "model_age", "Model age (fraction of the application's SLO)"
        ACCURACY = "accuracy", "Online accuracy"
        CONVERSION_RATE = "conversion_rate", "Conversion rate"
        CLICK_THROUGH_RATE = "click_through_rate", "Click-through rate"
        BAD_RECOMMENDATION_RATE = "bad_recommendation_rate", "Bad-recommendation rate"
        REPLICA_MISMATCH = "replica_mismatch", "Replicas serving another artifact"

    class Comparison(models.TextChoices):
        ABSOLUTE = "absolute", "Absolute threshold"
        VS_BASELINE_VERSION = "vs_baseline_version", "Relative to the previous version"
        VS_CONTROL_ARM = "vs_control_arm", "Relative to the control arm"

    class Severity(models.TextChoices):
        INFO = "info"
        WARNING = "warning"
        CRITICAL = "critical"

    key = models.SlugField(max_length=64, unique=True, help_text="Stable name, e.g. model-age-slo.")
    name = models.CharField(max_length=200)
    metric = models.CharField(max_length=32, choices=Metric.choices)
    comparison = models.CharField(
        max_length=24, choices=Comparison.choices, default=Comparison.ABSOLUTE
    )
    threshold = models.FloatField()
    window = models.DurationField(default=timedelta(hours=24))
    min_sample = models.PositiveIntegerField(
        default=100, help_text="Fewer observations (per side) than this: no verdict."
    )
    severity = models.CharField(max_length=16, choices=Severity.choices, default=Severity.WARNING)
    application = models.ForeignKey(
        Application,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="alert_rules",
        help_text="Only this application; empty: every application.",
    )
    enabled = models.BooleanField(default=True)
    builtin = models.BooleanField(default=False)
    stops_rollouts = models.BooleanField(
        default=False,
        help_text="When it fires for the candidate of a running rollout, pause the rollout "
        "(or roll it back, as the rollout's on_failure says).",
    )

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return self.name


class Alert(TimestampedModel):
    """One breach of a rule for one target, firing until the condition clears.

    At most one open (firing) alert per rule and target: re-evaluating a breach that is
    already known updates it instead of raising a duplicate.
    """

    class State(models.TextChoices):
        FIRING = "firing"
        RESOLVED = "resolved"

    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="alerts")
    target_key = models.CharField(max_length=128, help_text="e.g. app:3/version:17")
    application = models.ForeignKey(
        Application, null=True, blank=True, on_delete=models.CASCADE, related_name="alerts"
    )
    deployment = models.ForeignKey(
        Deployment, null=True, blank=True, on_delete=models.CASCADE, related_name="alerts"
    )
    model_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    state = models.CharField(max_length=16, choices=State.choices, default=State.FIRING)
    severity = models.CharField(max_length=16, choices=AlertRule.Severity.choices)
    summary = models.CharField(max_length=500)
    value = models.FloatField(null=True, blank=True)
    evidence = models.JSONField(default=dict, blank=True)
    started_at = models.DateTimeField(db_index=True)
    last_seen_at = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolution = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["rule", "target_key"],
                condition=Q(state="firing"),
                name="%(app_label)s_%(class)s_one_open_per_rule_target",
            ),
        ]
        indexes = [models.Index(fields=["state", "application"], name="feedback_alert_state_app")]

    def __str__(self) -> str:
        return f"{self.rule.key} {self.target_key} ({self.state})"


class NotificationChannel(TimestampedModel):
    """Where alerts are sent: email addresses, or a webhook signed with HMAC-SHA256."""

    class Kind(models.TextChoices):
        EMAIL = "email"
        WEBHOOK = "webhook"

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    target = models.CharField(
        max_length=500, help_text="Comma-separated addresses, or the webhook URL."
    )
    secret = models.CharField(
        max_length=200, blank=True, help_text="Webhook signing key (HMAC-SHA256)."
    )
    min_severity = models.CharField(
        max_length=16, choices=AlertRule.Severity.choices, default=AlertRule.Severity.WARNING
    )
    application = models.ForeignKey(
        Application,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
        help_text="Only alerts of this application; empty: all.",
    )
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.kind})"


class Notification(TimestampedModel):
    """One message about one alert event to one channel, retried until delivered or given up."""

    class Event(models.TextChoices):
        FIRING = "firing"
        RESOLVED = "resolved"

    class State(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        FAILED = "failed"

    delivery_id = models.UUIDField(unique=True, default=uuid.uuid4, editable=False)
    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="notifications")
    channel = models.ForeignKey(
        NotificationChannel, on_delete=models.CASCADE, related_name="notifications"
    )
    event = models.CharField(max_length=16, choices=Event.choices)
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    payload = models.JSONField(help_text="The exact body sent on every attempt.")
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(db_index=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["alert", "channel", "event"],
                name="%(app_label)s_%(class)s_once_per_alert_event",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event} of alert {self.alert_id} to {self.channel_id} ({self.state})"


class NotificationAttempt(models.Model):
    """The record of one delivery attempt: when, the outcome and how long it took."""

    notification = models.ForeignKey(
        Notification, on_delete=models.CASCADE, related_name="attempt_log"
    )
    number = models.PositiveSmallIntegerField()
    at = models.DateTimeField()
    ok = models.BooleanField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    duration_ms = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["notification_id", "number"]
        constraints = [
            models.UniqueConstraint(
                fields=["notification", "number"], name="%(app_label)s_%(class)s_unique_number"
            ),
        ]

    def __str__(self) -> str:
        return f"attempt {self.number} of notification {self.notification_id}"
