"""Admin of alerting: notification channels and rules are configured here; alerts inspected.

Registered from feedback/admin.py (Django autodiscovers only that module).
"""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from .models import Alert, AlertRule, Notification, NotificationAttempt, NotificationChannel


@admin.register(NotificationChannel)
class NotificationChannelAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "target", "min_severity", "application", "enabled"]
    list_filter = ["kind", "enabled", "min_severity"]
    list_select_related = ["application"]


@admin.register(AlertRule)
class AlertRuleAdmin(admin.ModelAdmin):
    list_display = [
        "key", "name", "metric", "comparison", "threshold", "window", "min_sample", "severity",
        "application", "enabled", "builtin",
    ]  # fmt: skip
    list_filter = ["metric", "comparison", "severity", "enabled", "builtin"]
    list_select_related = ["application"]
    readonly_fields = ["builtin"]


class NotificationInline(admin.TabularInline):
    model = Notification
    extra = 0
    can_delete = False
    fields = ["channel", "event", "state", "attempts", "next_attempt_at", "delivered_at"]
    readonly_fields = fields


@admin.register(Alert)
class AlertAdmin(admin.ModelAdmin):
    list_display = ["started_at", "rule", "state", "severity", "summary", "application"]
    list_filter = ["state", "severity", "rule"]
    search_fields = ["summary", "target_key", "application__slug"]
    list_select_related = ["rule", "application"]
    inlines = [NotificationInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(NotificationAttempt)
class NotificationAttemptAdmin(admin.ModelAdmin):
    list_display = ["at", "notification", "number", "ok", "status_code", "error", "duration_ms"]
    list_filter = ["ok"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
