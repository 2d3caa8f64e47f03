"""Admin for outbound webhooks: subscriptions, and a read-only delivery log with resend."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from registry.admin import ASSUME_HTTPS

from . import webhooks
from .models import WebhookDelivery, WebhookSubscription


@admin.register(WebhookSubscription)
class WebhookSubscriptionAdmin(admin.ModelAdmin):
    formfield_overrides = ASSUME_HTTPS
    list_display = ["name", "url", "events", "application", "enabled", "updated_at"]
    list_filter = ["enabled"]
    search_fields = ["name", "url"]
    list_select_related = ["application"]


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = [
        "delivery_id",
        "event",
        "subscription",
        "state",
        "attempts",
        "last_status_code",
        "last_attempt_at",
        "next_attempt_at",
    ]
    list_filter = ["state", "event"]
    list_select_related = ["subscription"]
    readonly_fields = [f.name for f in WebhookDelivery._meta.fields]
    actions = ["resend"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Send the selected deliveries again")
    def resend(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> None:
        for delivery in queryset:
            webhooks.redeliver(delivery=delivery)
        self.message_user(request, f"{queryset.count()} delivery(ies) queued", messages.SUCCESS)
