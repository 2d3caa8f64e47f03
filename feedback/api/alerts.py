"""Alerts API: alerts (read-only, filterable) and alert rules (devops may add and tune)."""

from __future__ import annotations

from typing import Any

import django_filters as filters
from django.db.models import Prefetch, QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response

from registry.api.serializers import (
    PositiveDurationField,
    StrictBooleanField,
    StrictCharField,
    StrictChoiceField,
    StrictFloatField,
    StrictInput,
    StrictIntegerField,
    error_responses,
    slug_field,
)
from registry.api.views import SafeLookupMixin, actor_of, validated
from registry.models import Application
from registry.permissions import RegistryWrite

from ..alert_selectors import alert_list, alert_rule_list
from ..models import Alert, AlertRule, Notification
from ..services.alerts import create_alert_rule, update_alert_rule

ID = [OpenApiParameter("id", OpenApiTypes.INT, OpenApiParameter.PATH)]
READ_ERRORS = error_responses(401, 403, 404)
LIST_ERRORS = error_responses(400, 401, 403, 404)
WRITE_ERRORS = error_responses(400, 401, 403, 404, 409)

# --- Serializers ---


class NotificationSerializer(serializers.ModelSerializer):
    channel = serializers.CharField(source="channel.name")

    class Meta:
        model = Notification
        fields = [
            "delivery_id",
            "channel",
            "event",
            "state",
            "attempts",
            "next_attempt_at",
            "delivered_at",
            "last_error",
        ]


class AlertSerializer(serializers.ModelSerializer):
    rule = serializers.CharField(source="rule.key")
    rule_name = serializers.CharField(source="rule.name")
    application = serializers.CharField(source="application.slug", allow_null=True)
    deployment = serializers.IntegerField(source="deployment_id", allow_null=True)
    model_version = serializers.SerializerMethodField()
    notifications = NotificationSerializer(source="notification_list", many=True)

    class Meta:
        model = Alert
        fields = [
            "id",
            "rule",
            "rule_name",
            "state",
            "severity",
            "summary",
            "application",
            "deployment",
            "model_version",
            "target_key",
            "value",
            "evidence",
            "started_at",
            "last_seen_at",
            "resolved_at",
            "resolution",
            "notifications",
        ]

    def get_model_version(self, alert: Alert) -> str | None:
        return str(alert.model_version) if alert.model_version else None


class AlertRuleSerializer(serializers.ModelSerializer):
    application = serializers.CharField(source="application.slug", allow_null=True)
    window = PositiveDurationField()

    class Meta:
        model = AlertRule
        fields = [
            "id",
            "key",
            "name",
            "metric",
            "comparison",
            "threshold",
            "window",
            "min_sample",
            "severity",
            "application",
            "enabled",
            "builtin",
            "stops_rollouts",
        ]


class AlertRuleCreateInput(StrictInput):
    key = slug_field(64)
    name = StrictCharField(max_length=200)
    metric = StrictChoiceField(choices=AlertRule.Metric.choices)
    comparison = StrictChoiceField(choices=AlertRule.Comparison.choices, required=False)
    threshold = StrictFloatField(min_value=0, max_value=1e9)
    window = PositiveDurationField(required=False)
    min_sample = StrictIntegerField(min_value=1, max_value=10**9, required=False)
    severity = StrictChoiceField(choices=AlertRule.Severity.choices, required=False)
    application = slug_field(64, required=False)
    enabled = StrictBooleanField(required=False)
    stops_rollouts = StrictBooleanField(required=False)

    def validate_application(self, value: str) -> Application:
        app = Application.objects.filter(slug=value).first()
        if app is None:
            raise serializers.ValidationError("No such application.")
        return app


class AlertRuleUpdateInput(StrictInput):
    name = StrictCharField(max_length=200, required=False)
    threshold = StrictFloatField(min_value=0, max_value=1e9, required=False)
    window = PositiveDurationField(required=False)
    min_sample = StrictIntegerField(min_value=1, max_value=10**9, required=False)
    severity = StrictChoiceField(choices=AlertRule.Severity.choices, required=False)
    enabled = StrictBooleanField(required=False)
    stops_rollouts = StrictBooleanField(required=False)


# --- Filters ---


class AlertFilterSet(filters.FilterSet):
    state = filters.ChoiceFilter(choices=Alert.State.choices)
    severity = filters.ChoiceFilter(choices=AlertRule.Severity.choices)
    application = filters.CharFilter(field_name="application__slug")
    rule = filters.CharFilter(field_name="rule__key")

    class Meta:
        model = Alert
        fields = ["state", "severity", "application", "rule"]


# --- Views ---


@extend_schema(tags=["alerts"])
@extend_schema_view(
    list=extend_schema(
        summary="List alerts (firing and resolved)",
        responses={200: AlertSerializer(many=True), **LIST_ERRORS},
    ),
    retrieve=extend_schema(
        summary="One alert with its evidence and deliveries",
        parameters=ID,
        responses={200: AlertSerializer, **READ_ERRORS},
    ),
)
class AlertViewSet(SafeLookupMixin, viewsets.ReadOnlyModelViewSet):
    """Alerts raised by rules and detectors; deduplicated per rule and target."""

    serializer_class = AlertSerializer
    filterset_class = AlertFilterSet
    ordering_fields = ["started_at", "id"]
    ordering = ["-started_at", "-id"]

    def get_queryset(self) -> QuerySet[Alert]:
        deliveries = Notification.objects.select_related("channel").order_by("id")
        return alert_list().prefetch_related(
            Prefetch("notifications", queryset=deliveries, to_attr="notification_list")
        )


@extend_schema(tags=["alerts"])
@extend_schema_view(
    list=extend_schema(
        summary="List alert rules", responses={200: AlertRuleSerializer(many=True), **LIST_ERRORS}
    ),
    retrieve=extend_schema(
        summary="One alert rule", parameters=ID, responses={200: AlertRuleSerializer, **READ_ERRORS}
    ),
    create=extend_schema(
        summary="Add an alert rule (devops, registry:write)",
        request=AlertRuleCreateInput,
        responses={201: AlertRuleSerializer, **WRITE_ERRORS},
    ),
    partial_update=extend_schema(
        summary="Tune an alert rule (devops, registry:write)",
        parameters=ID,
        request=AlertRuleUpdateInput,
        responses={200: AlertRuleSerializer, **WRITE_ERRORS},
    ),
)
class AlertRuleViewSet(
    SafeLookupMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """Alert rules: built-in ones and those devops add."""

    parser_classes = [JSONParser]
    serializer_class = AlertRuleSerializer
    permission_classes = [RegistryWrite]
    ordering = ["key"]
    http_method_names = ["get", "post", "patch", "head", "options"]

    def get_queryset(self) -> QuerySet[AlertRule]:
        return alert_rule_list()

    def create(self, request: Request) -> Response:
        data: dict[str, Any] = validated(AlertRuleCreateInput, request)
        rule = create_alert_rule(actor=actor_of(request), **data)
        return Response(AlertRuleSerializer(rule).data, status=status.HTTP_201_CREATED)

    def partial_update(self, request: Request, pk: str) -> Response:
        rule = self.get_object()
        data = validated(AlertRuleUpdateInput, request)
        rule = update_alert_rule(actor=actor_of(request), rule=rule, **data)
        return Response(AlertRuleSerializer(rule).data)
