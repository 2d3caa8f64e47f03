"""Webhook subscriptions API: `/api/v1/webhooks/` (devops only: URLs and answers are sensitive).

Reads need scope `read`, writes `registry:write`; every call needs the devops role. The
secret is returned once, when the subscription is created.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response

from registry.api.serializers import (
    StrictBooleanField,
    StrictCharField,
    StrictInput,
    StrictURLField,
    error_responses,
    slug_field,
)
from registry.api.views import SafeLookupMixin, actor_of, validated
from registry.models import Application
from registry.permissions import RegistryWrite
from registry.roles import DEVOPS, has_role

from . import webhooks
from .models import EVENT_TYPES, WebhookDelivery, WebhookSubscription

ID = [OpenApiParameter("id", OpenApiTypes.INT, OpenApiParameter.PATH)]
READ_ERRORS = error_responses(401, 403, 404)
LIST_ERRORS = error_responses(400, 401, 403, 404)
WRITE_ERRORS = error_responses(400, 401, 403, 404)
PATTERNS = sorted({*EVENT_TYPES, "*", *{e.split(".")[0] + ".*" for e in EVENT_TYPES}})


class DevopsOnly(RegistryWrite):
    """Scopes as everywhere (read / registry:write), and the devops role for reads too."""

    def has_permission(self, request: Request, view: Any) -> bool:
        return super().has_permission(request, view) and has_role(request.user, DEVOPS)


class WebhookSubscriptionSerializer(serializers.ModelSerializer):
    application = serializers.CharField(
        source="application.slug", read_only=True, allow_null=True, help_text="Or null: all."
    )
    events = serializers.ListField(child=serializers.CharField())

    class Meta:
        model = WebhookSubscription
        fields = ["id", "name", "url", "events", "application", "enabled", "created_at"]
        read_only_fields = fields


class WebhookSubscriptionCreatedSerializer(WebhookSubscriptionSerializer):
    class Meta(WebhookSubscriptionSerializer.Meta):
        fields = [*WebhookSubscriptionSerializer.Meta.fields, "secret"]
        read_only_fields = fields


class WebhookDeliverySerializer(serializers.ModelSerializer):
    class Meta:
        model = WebhookDelivery
        fields = [
            "id",
            "delivery_id",
            "event",
            "state",
            "attempts",
            "next_attempt_at",
            "delivered_at",
            "last_attempt_at",
            "last_status_code",
            "last_response",
            "last_error",
            "payload",
            "created_at",
        ]
        read_only_fields = fields


class EventsField(serializers.ListField):
    child = serializers.ChoiceField(choices=PATTERNS)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(min_length=1, max_length=len(PATTERNS), **kwargs)


class WebhookCreateInput(StrictInput):
    name = StrictCharField(max_length=100)
    url = StrictURLField(max_length=500, help_text="http(s) URL that receives the POSTs.")
    events = EventsField(help_text='Event types, "<family>.*" or "*".')
    application = slug_field(64, required=False, help_text="Only this application's events.")
    enabled = StrictBooleanField(required=False, default=True)

    def validate_url(self, value: str) -> str:
        if not value.lower().startswith(("http://", "https://")):
            raise serializers.ValidationError("Use an http:// or https:// URL.")
        return value

    def validate_application(self, value: str) -> Application:
        app = Application.objects.filter(slug=value).first()
        if app is None:
            raise serializers.ValidationError("No such application.")
        return app

    def validate_name(self, value: str) -> str:
        if WebhookSubscription.objects.filter(name=value).exists():
            raise serializers.ValidationError("A subscription with this name exists.")
        return value


class WebhookUpdateInput(StrictInput):
    url = StrictURLField(max_length=500, required=False)
    events = EventsField(required=False)
    enabled = StrictBooleanField(required=False)

    def validate_url(self, value: str) -> str:
        return WebhookCreateInput.validate_url(self, value)  # type: ignore[arg-type]


@extend_schema(tags=["webhooks"])
@extend_schema_view(
    list=extend_schema(
        summary="List webhook subscriptions (devops)",
        responses={200: WebhookSubscriptionSerializer(many=True), **LIST_ERRORS},
    ),
    retrieve=extend_schema(
        summary="One webhook subscription (devops)",
        parameters=ID,
        responses={200: WebhookSubscriptionSerializer, **READ_ERRORS},
    ),
    create=extend_schema(
        summary="Subscribe a URL to events (devops, registry:write); the secret is shown once",
        request=WebhookCreateInput,
        responses={201: WebhookSubscriptionCreatedSerializer, **WRITE_ERRORS},
    ),
    partial_update=extend_schema(
        summary="Change a subscription's URL, events or enabled flag (devops, registry:write)",
        parameters=ID,
        request=WebhookUpdateInput,
        responses={200: WebhookSubscriptionSerializer, **WRITE_ERRORS},
    ),
    destroy=extend_schema(
        summary="Delete a subscription and its delivery log (devops, registry:write)",
        parameters=ID,
        responses={204: None, **error_responses(401, 403, 404)},
    ),
    deliveries=extend_schema(
        summary="The subscription's deliveries, newest first, with the last answer (devops)",
        parameters=ID,
        responses={200: WebhookDeliverySerializer(many=True), **LIST_ERRORS},
    ),
)
class WebhookSubscriptionViewSet(
    SafeLookupMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Outbound webhook subscriptions (see README: Outbound webhooks)."""

    parser_classes = [JSONParser]
    serializer_class = WebhookSubscriptionSerializer
    permission_classes = [DevopsOnly]
    ordering = ["name"]
    ordering_fields = ["name", "id"]
    filterset_fields = ["enabled"]
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_queryset(self) -> QuerySet[WebhookSubscription]:
        return WebhookSubscription.objects.select_related("application")

    def create(self, request: Request) -> Response:
        data = validated(WebhookCreateInput, request)
        sub = webhooks.create_subscription(actor=actor_of(request), **data)
        return Response(
            WebhookSubscriptionCreatedSerializer(sub).data, status=status.HTTP_201_CREATED
        )

    def partial_update(self, request: Request, pk: str) -> Response:
        sub = self.get_object()
        data = validated(WebhookUpdateInput, request)
        sub = webhooks.update_subscription(actor=actor_of(request), subscription=sub, **data)
        return Response(WebhookSubscriptionSerializer(sub).data)

    def perform_destroy(self, instance: WebhookSubscription) -> None:
        webhooks.delete_subscription(actor=actor_of(self.request), subscription=instance)

    @action(detail=True, methods=["get"], filterset_fields=[], ordering_fields=[])
    def deliveries(self, request: Request, pk: str) -> Response:
        sub = self.get_object()
        rows = WebhookDelivery.objects.filter(subscription=sub).order_by("-id")
        page = self.paginate_queryset(rows)
        return self.get_paginated_response(WebhookDeliverySerializer(page, many=True).data)
