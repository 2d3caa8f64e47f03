"""API shapes of feedback: the event contract (documentation of what the worker checks),
ingest batches as clients poll them, and reports."""

from __future__ import annotations

from rest_framework import serializers

from registry.models import TrafficAllocation

from ..models import FeedbackKind, FeedbackReport, IngestBatch


class FeedbackEventInput(serializers.Serializer):
    """One event. Checked per event by the ingest worker; a bad one is rejected alone."""

    event_id = serializers.UUIDField(help_text="Client-generated; a re-sent event counts once.")
    occurred_at = serializers.DateTimeField(help_text="ISO 8601; naive means UTC.")
    application = serializers.CharField(help_text="Application slug.")
    model_version = serializers.CharField(
        required=False,
        help_text='"<model>:<version>". When absent, the version serving the application at '
        "occurred_at; while several arms serve, send this or `role`.",
    )
    role = serializers.ChoiceField(
        choices=TrafficAllocation.Role.choices, required=False, help_text="The arm's role."
    )
    kind = serializers.ChoiceField(
        choices=FeedbackKind.choices,
        help_text="impression, click, conversion, bad_recommendation, label, or prediction.",
    )
    value = serializers.FloatField(
        required=False, allow_null=True, help_text="A number, e.g. revenue of a conversion."
    )
    prediction = serializers.JSONField(
        required=False, allow_null=True, help_text="What the model answered (prediction events)."
    )
    label = serializers.JSONField(
        required=False,
        allow_null=True,
        help_text="The ground truth (label events); joined to the prediction by request_id "
        "within 14 days and counted for the version that predicted.",
    )
    request_id = serializers.CharField(
        required=False, max_length=128, help_text="Your id of the served request (≤ 128)."
    )
    segment = serializers.CharField(
        required=False, max_length=64, help_text="Free label for breakdowns (≤ 64)."
    )
    payload = serializers.DictField(required=False, help_text="Free JSON object, at most 4 KB.")


class FeedbackUploadInput(serializers.Serializer):
    file = serializers.FileField(help_text="CSV (with a header row) or JSONL, UTF-8, at most 5 MB.")
    application = serializers.SlugField(
        required=False, help_text="Default application for rows that name none."
    )


class RowErrorSerializer(serializers.Serializer):
    index = serializers.IntegerField(help_text="0-based position of the event (data row).")
    field = serializers.CharField()
    message = serializers.CharField()


class IngestBatchSerializer(serializers.ModelSerializer):
    errors = RowErrorSerializer(many=True, read_only=True)
    url = serializers.SerializerMethodField()

    class Meta:
        model = IngestBatch
        fields = [
            "id", "url", "state", "source", "format", "filename", "created_at", "finished_at",
            "attempts", "total", "accepted", "duplicate", "rejected", "errors",
        ]  # fmt: skip
        read_only_fields = fields

    def get_url(self, batch: IngestBatch) -> str:
        return f"/api/v1/ingest-batches/{batch.pk}"


class FeedbackReportSerializer(serializers.ModelSerializer):
    application = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    model_version = serializers.StringRelatedField()
    reported_by = serializers.StringRelatedField()
    acknowledged_by = serializers.StringRelatedField()
    resolved_by = serializers.StringRelatedField()

    class Meta:
        model = FeedbackReport
        fields = [
            "id", "application", "model_version", "kind", "severity", "title", "description",
            "example_request_ids", "state", "reported_by", "created_at", "acknowledged_by",
            "acknowledged_at", "resolved_by", "resolved_at", "resolution",
        ]  # fmt: skip
        read_only_fields = fields


class FeedbackReportInput(serializers.Serializer):
    application = serializers.SlugField()
    model_version = serializers.CharField(
        required=False, help_text='"<model>:<version>"; defaults to what serves the app now.'
    )
    kind = serializers.ChoiceField(choices=FeedbackReport.Kind.choices)
    severity = serializers.ChoiceField(
        choices=FeedbackReport.Severity.choices, default=FeedbackReport.Severity.MEDIUM
    )
    title = serializers.CharField(max_length=200)
    description = serializers.CharField(required=False, allow_blank=True, max_length=10_000)
    example_request_ids = serializers.ListField(
        child=serializers.CharField(max_length=128), required=False, max_length=100
    )


class ReportTransitionInput(serializers.Serializer):
    note = serializers.CharField(required=False, allow_blank=True, max_length=2000)
