"""Admin for feedback: pull sources are configured here; batches and reports are inspected."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from registry.admin import ASSUME_HTTPS

from .models import FeedbackReport, FeedbackSource, IngestBatch, QualityRollup


@admin.register(FeedbackSource)
class FeedbackSourceAdmin(admin.ModelAdmin):
    formfield_overrides = ASSUME_HTTPS
    list_display = [
        "name", "application", "kind", "interval", "enabled", "last_success_at",
        "consecutive_failures", "last_error_at", "next_poll_at",
    ]  # fmt: skip
    list_filter = ["kind", "enabled"]
    search_fields = ["name", "application__slug", "url"]
    list_select_related = ["application"]
    readonly_fields = [
        "next_poll_at", "consecutive_failures", "last_polled_at", "last_success_at",
        "last_error_at", "last_error",
    ]  # fmt: skip
    fieldsets = [
        (
            None,
            {"fields": ["application", "name", "kind", "url", "headers", "interval", "enabled"]},
        ),
        ("Progress", {"fields": ["cursor", *readonly_fields]}),
    ]


@admin.register(IngestBatch)
class IngestBatchAdmin(admin.ModelAdmin):
    """Read-only: batches are written by the ingest path only."""

    list_display = [
        "id", "source", "format", "state", "created_by", "created_at", "finished_at",
        "attempts", "accepted", "duplicate", "rejected",
    ]  # fmt: skip
    list_filter = ["state", "source", "format"]
    list_select_related = ["created_by"]
    search_fields = ["=id", "filename", "idempotency_key"]
    exclude = ["raw"]
    date_hierarchy = "created_at"

    def get_queryset(self, request: HttpRequest) -> QuerySet[IngestBatch]:
        return super().get_queryset(request).defer("raw")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(FeedbackReport)
class FeedbackReportAdmin(admin.ModelAdmin):
    list_display = ["id", "title", "application", "kind", "severity", "state", "created_at"]
    list_filter = ["state", "severity", "kind"]
    search_fields = ["title", "description", "application__slug"]
    list_select_related = ["application"]
    readonly_fields = [
        "reported_by", "acknowledged_by", "acknowledged_at", "resolved_by", "resolved_at",
    ]  # fmt: skip


@admin.register(QualityRollup)
class QualityRollupAdmin(admin.ModelAdmin):
    list_display = ["hour", "application", "model_version", "kind", "count", "labelled", "correct"]
    list_filter = ["kind"]
    list_select_related = ["application", "model_version__registered_model"]
    date_hierarchy = "hour"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


from . import alert_admin  # noqa: E402, F401  alert rules, channels, alerts, deliveries
