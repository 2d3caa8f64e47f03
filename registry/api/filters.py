"""List filters of the registry API (django-filter, explicit fields; STYLE R11).

Dashboard pages may reuse these FilterSets for their GET filters so that UI and API agree.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import django_filters as filters
from django import forms
from django.db.models import Q, QuerySet
from django_filters.fields import IsoDateTimeField
from django_filters.rest_framework import DjangoFilterBackend
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request

from registry.models import (
    Application,
    AuditEvent,
    Deployment,
    ModelVersion,
    RegisteredModel,
    Replica,
)


class UtcIsoDateTimeField(IsoDateTimeField):
    """ISO 8601 in, UTC out: PostgreSQL refuses offsets beyond 15:59 that Python accepts."""

    def to_python(self, value: Any) -> datetime | None:
        parsed = super().to_python(value)
        if parsed is None:
            return None
        try:
            return parsed.astimezone(UTC)
        except OverflowError as exc:
            raise forms.ValidationError("Out of range.", code="invalid") from exc


class InstantFilter(filters.IsoDateTimeFilter):
    field_class = UtcIsoDateTimeField


class ApplicationFilterSet(filters.FilterSet):
    team = filters.CharFilter(help_text="Owning team, exact.")
    criticality = filters.ChoiceFilter(choices=Application.Criticality.choices)
    search = filters.CharFilter(method="filter_search", help_text="Slug or name contains.")

    class Meta:
        model = Application
        fields = ["team", "criticality", "search"]

    def filter_search(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        return queryset.filter(Q(slug__icontains=value) | Q(name__icontains=value))


class RegisteredModelFilterSet(filters.FilterSet):
    team = filters.CharFilter(help_text="Owning team, exact.")
    task = filters.CharFilter(help_text="e.g. ranking, classification.")
    search = filters.CharFilter(
        field_name="name", lookup_expr="icontains", help_text="Name contains."
    )

    class Meta:
        model = RegisteredModel
        fields = ["team", "task", "search"]


class ModelVersionFilterSet(filters.FilterSet):
    model = filters.CharFilter(field_name="registered_model__name", help_text="Model name, exact.")
    stage = filters.ChoiceFilter(choices=ModelVersion.Stage.choices)
    format = filters.ChoiceFilter(choices=ModelVersion.Format.choices)
    framework = filters.CharFilter(help_text="e.g. pytorch, xgboost (exact).")
    sha256 = filters.CharFilter(help_text="Artifact digest, exact (lowercase hex).")
    trained_after = InstantFilter(
        field_name="trained_at", lookup_expr="gte", help_text="trained_at >= this instant."
    )
    trained_before = InstantFilter(
        field_name="trained_at", lookup_expr="lt", help_text="trained_at < this instant."
    )

    class Meta:
        model = ModelVersion
        fields = [
            "model",
            "stage",
            "format",
            "framework",
            "sha256",
            "trained_after",
            "trained_before",
        ]


class DeploymentFilterSet(filters.FilterSet):
    application = filters.CharFilter(field_name="application__slug", help_text="Application slug.")
    environment = filters.ChoiceFilter(choices=Deployment.Environment.choices)

    class Meta:
        model = Deployment
        fields = ["application", "environment"]


class ReplicaFilterSet(filters.FilterSet):
    deployment = filters.NumberFilter(field_name="deployment_id", help_text="Deployment id.")
    application = filters.CharFilter(
        field_name="deployment__application__slug", help_text="Application slug."
    )
    instance_id = filters.CharFilter()

    class Meta:
        model = Replica
        fields = ["deployment", "application", "instance_id"]


class AuditEventFilterSet(filters.FilterSet):
    application = filters.CharFilter(field_name="application__slug", help_text="Application slug.")
    actor = filters.CharFilter(
        method="filter_actor", help_text="Username of the actor (also matches 'system' labels)."
    )
    kind = filters.CharFilter(help_text="e.g. version.registered, alias.moved (exact).")
    kind_prefix = filters.CharFilter(
        field_name="kind", lookup_expr="startswith", help_text="e.g. 'alias.' for all alias events."
    )
    target_type = filters.CharFilter(help_text="e.g. ModelVersion, Deployment.")
    target_id = filters.CharFilter()
    since = InstantFilter(field_name="at", lookup_expr="gte", help_text="at >= since.")
    until = InstantFilter(field_name="at", lookup_expr="lt", help_text="at < until.")

    class Meta:
        model = AuditEvent
        fields = [
            "application",
            "actor",
            "kind",
            "kind_prefix",
            "target_type",
            "target_id",
            "since",
            "until",
        ]

    def filter_actor(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        return queryset.filter(Q(actor__username=value) | Q(actor_label=value))


BOOLEANS = {None, "true", "false", "True", "False", "1", "0"}


class StrictFilterBackend(DjangoFilterBackend):
    """DjangoFilterBackend that refuses typed query parameters given empty (`?since=`),
    and booleans that are not one (django-filter reads `?active=null` as "no filter").

    An HTML form sends empty fields meaning "no filter", but an API client that sends
    `?stage=` or `?since=` made a mistake the schema forbids; say so with a 400.
    """

    def get_filterset(self, request: Request, queryset: QuerySet, view: Any) -> Any:
        filterset = super().get_filterset(request, queryset, view)
        if filterset is None:
            return None
        errors: dict[str, list[str]] = {}
        for name, f in filterset.filters.items():
            value = request.query_params.get(name)
            if value == "" and not isinstance(f, filters.CharFilter):
                errors[name] = ["Must not be empty."]
            elif isinstance(f, filters.BooleanFilter) and value not in BOOLEANS:
                errors[name] = ["Must be true or false."]
        if errors:
            raise ValidationError(errors)
        return filterset
