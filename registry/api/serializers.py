"""Serializers of the registry API: `XSerializer` for output, `XInput` for request bodies.

Inputs are strict: unknown keys are a 400 (RejectUnknownFieldsMixin), strings must be JSON
strings, numbers JSON numbers (DRF would otherwise coerce 0 to "0" and "5" to 5), so the
OpenAPI schema tells the truth about what is accepted. Other apps import ErrorSerializer,
error_responses and the strict fields from here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from django.utils.dateparse import parse_duration
from drf_spectacular.extensions import OpenApiSerializerExtension, OpenApiSerializerFieldExtension
from drf_spectacular.plumbing import build_basic_type
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers

from registry import selectors
from registry.models import (
    AliasAssignment,
    Application,
    AuditEvent,
    Deployment,
    ModelAlias,
    ModelVersion,
    RegisteredModel,
    Replica,
    TrafficAllocation,
)

SLUG_RE = r"^[a-z0-9][a-z0-9_-]*$"
PG_BIGINT_MAX = 2**63 - 1
PG_INT_MAX = 2**31 - 1

# --- Error shape ---


class ErrorBodySerializer(serializers.Serializer):
    status = serializers.IntegerField(help_text="The HTTP status code, repeated.")
    code = serializers.CharField(help_text="Machine-readable: invalid, not_found, duplicate, ...")
    message = serializers.CharField(help_text="Human-readable summary.")
    fields = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        required=False,
        help_text='Field-level messages, e.g. {"sha256": ["..."], "allocations[0].version": [...]}',
    )


class ErrorSerializer(serializers.Serializer):
    """The one error shape of the whole API (registry.api.errors)."""

    error = ErrorBodySerializer()


ERROR_DESCRIPTIONS = {
    400: "Invalid input; `error.fields` names each offending field.",
    401: "No credentials, or an invalid, expired or revoked token.",
    403: "The token lacks the scope, or its user the role, that this action needs.",
    404: "No such object (or page).",
    409: "Conflicts with the current state, e.g. a duplicate version number.",
}


def error_responses(*codes: int) -> dict[int, OpenApiResponse]:
    """OpenAPI responses in the common error shape, for extend_schema(responses=...)."""
    return {
        code: OpenApiResponse(ErrorSerializer, description=ERROR_DESCRIPTIONS.get(code, "Error"))
        for code in codes
    }


# --- Strict fields ---


class StrictCharField(serializers.CharField):
    """A CharField that refuses non-strings instead of coercing 0 to "0"."""

    default_error_messages = {"not_a_string": "Must be a string."}

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("not_a_string")
        return super().to_internal_value(data)


class StrictRegexField(serializers.RegexField, StrictCharField):
    pass


class StrictURLField(serializers.URLField, StrictCharField):
    pass


class StrictChoiceField(serializers.ChoiceField):
    default_error_messages = {"not_a_string": "Must be a string."}

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, str):
            self.fail("not_a_string")
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    """Only JSON integers: no "5", no true, no 2.5."""

    default_error_messages = {"not_an_integer": "Must be an integer."}

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, float) and data.is_integer():
            data = int(data)
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("not_an_integer")
        return super().to_internal_value(data)


class StrictFloatField(serializers.FloatField):
    default_error_messages = {"not_a_number": "Must be a number."}

    def to_internal_value(self, data: Any) -> float:
        if isinstance(data, bool) or not isinstance(data, int | float) or not math.isfinite(data):
            self.fail("not_a_number")
        return float(data)


class StrictBooleanField(serializers.BooleanField):
    default_error_messages = {"not_a_boolean": "Must be true or false."}

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("not_a_boolean")
        return data


class StrictDateTimeField(serializers.DateTimeField):
    """An ISO 8601 instant given as a string (DRF accepts datetime objects too, JSON cannot)."""

    default_error_messages = {"not_a_string": "Must be an ISO 8601 date-time string."}

    def to_internal_value(self, value: Any) -> Any:
        if not isinstance(value, str):
            self.fail("not_a_string")
        return super().to_internal_value(value)


class PositiveDurationField(serializers.Field):
    """A positive duration in, as ISO 8601 ("PT24H", "P7D") or "[D ]HH:MM:SS".

    Output is Django's "[D ]HH:MM:SS" form ("1 00:00:00"), which it also accepts back.
    """

    default_error_messages = {
        "invalid": 'Use an ISO 8601 duration such as "PT24H" or "P7D", or "[D ]HH:MM:SS".',
        "not_positive": "Must be longer than zero and at most 3650 days.",
    }

    def to_internal_value(self, data: Any) -> timedelta:
        if not isinstance(data, str):
            self.fail("invalid")
        try:
            parsed = parse_duration(data)
        except (ValueError, OverflowError):
            parsed = None
        if parsed is None:
            self.fail("invalid")
        if not timedelta(0) < parsed <= timedelta(days=3650):
            self.fail("not_positive")
        return parsed

    def to_representation(self, value: timedelta) -> str:
        return serializers.DurationField().to_representation(value)


class PositiveDurationFieldSchema(OpenApiSerializerFieldExtension):
    target_class = "registry.api.serializers.PositiveDurationField"

    def map_serializer_field(self, auto_schema: Any, direction: str) -> dict[str, Any]:
        example = "PT24H" if direction == "request" else "1 00:00:00"
        return {**build_basic_type(OpenApiTypes.STR), "example": example}


class RejectUnknownFieldsMixin:
    """Reject keys the serializer does not accept, instead of silently dropping them."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            writable = {name for name, f in self.fields.items() if not f.read_only}  # type: ignore[attr-defined]
            unknown = sorted(str(k) for k in data if k not in writable)
            if unknown:
                raise serializers.ValidationError({k: ["Unknown field."] for k in unknown})
        return super().to_internal_value(data)  # type: ignore[misc]


class StrictInput(RejectUnknownFieldsMixin, serializers.Serializer):
    pass  # the base of every request body


class StrictInputSchema(OpenApiSerializerExtension):
    """Say so in the schema: request bodies allow no additional properties."""

    target_class = "registry.api.serializers.RejectUnknownFieldsMixin"
    match_subclasses = True

    def map_serializer(self, auto_schema: Any, direction: str) -> dict[str, Any]:
        schema = auto_schema._map_basic_serializer(self.target, direction)
        if direction == "request":
            schema["additionalProperties"] = False
        return schema


def reason_field() -> StrictCharField:
    return StrictCharField(
        required=False,
        allow_blank=True,
        max_length=2000,
        help_text="Why; written into the audit log.",
    )


def slug_field(max_length: int, **kwargs: Any) -> StrictRegexField:
    return StrictRegexField(
        SLUG_RE,
        max_length=max_length,
        error_messages={"invalid": "Use lowercase letters, digits, - and _."},
        **kwargs,
    )


# --- Applications ---


class ApplicationSerializer(serializers.ModelSerializer):
    max_model_age = PositiveDurationField(help_text="Age SLO, e.g. '1 00:00:00'.")
    max_model_age_seconds = serializers.SerializerMethodField()

    class Meta:
        model = Application
        fields = [
            "slug",
            "name",
            "team",
            "criticality",
            "max_model_age",
            "max_model_age_seconds",
            "description",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_max_model_age_seconds(self, obj: Application) -> int:
        return int(obj.max_model_age.total_seconds())


class ApplicationCreateInput(StrictInput):
    slug = slug_field(64)
    name = StrictCharField(max_length=200)
    team = StrictCharField(max_length=100)
    criticality = StrictChoiceField(
        choices=Application.Criticality.choices, default=Application.Criticality.MEDIUM
    )
    max_model_age = PositiveDurationField(help_text='The age SLO, e.g. "PT24H".')
    description = StrictCharField(required=False, allow_blank=True, max_length=10_000)
    reason = reason_field()


class ApplicationUpdateInput(StrictInput):
    name = StrictCharField(required=False, max_length=200)
    team = StrictCharField(required=False, max_length=100)
    criticality = StrictChoiceField(required=False, choices=Application.Criticality.choices)
    max_model_age = PositiveDurationField(required=False, help_text='e.g. "PT24H".')
    description = StrictCharField(required=False, allow_blank=True, max_length=10_000)
    reason = reason_field()


# --- Registered models and versions ---


class AliasSummarySerializer(serializers.ModelSerializer):
    version = serializers.IntegerField(source="version.version")

    class Meta:
        model = ModelAlias
        fields = ["name", "version", "protected"]
        read_only_fields = fields


class RegisteredModelSerializer(serializers.ModelSerializer):
    aliases = AliasSummarySerializer(many=True, source="alias_list", read_only=True)

    class Meta:
        model = RegisteredModel
        fields = ["name", "team", "task", "description", "aliases", "created_at", "updated_at"]
        read_only_fields = fields


class RegisteredModelCreateInput(StrictInput):
    name = slug_field(100)
    team = StrictCharField(required=False, allow_blank=True, max_length=100)
    task = StrictCharField(required=False, allow_blank=True, max_length=100)
    description = StrictCharField(required=False, allow_blank=True, max_length=10_000)
    reason = reason_field()


def url_or_empty(what: str) -> serializers.CharField:
    """A URL field that may be blank: documented as a plain string, since "" is no URI."""
    return serializers.CharField(read_only=True, help_text=f"{what} URL, or empty.")


class ModelVersionSerializer(serializers.ModelSerializer):
    model = serializers.CharField(source="registered_model.name", read_only=True)
    pipeline_url = url_or_empty("Pipeline run")
    metrics = serializers.SerializerMethodField(help_text="Offline metrics, name -> value.")

    class Meta:
        model = ModelVersion
        fields = [
            "id",
            "model",
            "version",
            "artifact_uri",
            "sha256",
            "size_bytes",
            "memory_bytes",
            "format",
            "framework",
            "trained_at",
            "data_cutoff",
            "source_commit",
            "pipeline_url",
            "metrics",
            "stage",
            "created_at",
        ]
        read_only_fields = fields

    def get_metrics(self, obj: ModelVersion) -> dict[str, float]:
        items = (obj.metrics or {}).items()
        return {
            k: float(v) for k, v in items if isinstance(v, int | float) and not isinstance(v, bool)
        }


class ModelVersionCreateInput(StrictInput):
    version = StrictIntegerField(
        required=False,
        min_value=1,
        max_value=PG_INT_MAX,
        help_text="Omit to take the next number.",
    )
    artifact_uri = StrictCharField(max_length=500)
    sha256 = StrictRegexField(
        r"^[0-9a-fA-F]{64}$",
        error_messages={"invalid": "Enter a sha256 as 64 hex digits."},
        help_text="64 hex digits; stored lowercase.",
    )
    size_bytes = StrictIntegerField(min_value=0, max_value=PG_BIGINT_MAX)
    memory_bytes = StrictIntegerField(
        required=False, allow_null=True, min_value=0, max_value=PG_BIGINT_MAX
    )
    format = StrictChoiceField(
        choices=ModelVersion.Format.choices, default=ModelVersion.Format.OTHER
    )
    framework = StrictCharField(required=False, allow_blank=True, max_length=50)
    trained_at = StrictDateTimeField()
    data_cutoff = StrictDateTimeField(required=False, allow_null=True)
    source_commit = StrictCharField(required=False, allow_blank=True, max_length=64)
    pipeline_url = StrictURLField(required=False, allow_blank=True, max_length=500)
    metrics = serializers.DictField(
        child=StrictFloatField(),
        required=False,
        help_text='Offline metrics, e.g. {"accuracy": 0.9}',
    )
    stage = StrictChoiceField(choices=ModelVersion.Stage.choices, default=ModelVersion.Stage.NONE)
    reason = reason_field()

    def validate_sha256(self, value: str) -> str:
        return value.lower()

    def validate_metrics(self, value: dict[str, float]) -> dict[str, float]:
        if len(value) > 100 or any(len(k) > 100 for k in value):
            raise serializers.ValidationError("At most 100 metrics with names up to 100 chars.")
        return value


# --- Aliases ---


class AliasAssignmentSerializer(serializers.ModelSerializer):
    version = serializers.IntegerField(source="version.version")
    assigned_by = serializers.CharField(
        source="assigned_by.username", allow_null=True, default=None
    )

    class Meta:
        model = AliasAssignment
        fields = ["version", "assigned_at", "replaced_at", "assigned_by"]
        read_only_fields = fields


class ModelAliasSerializer(serializers.ModelSerializer):
    model = serializers.CharField(source="registered_model.name")
    version = serializers.IntegerField(source="version.version")

    class Meta:
        model = ModelAlias
        fields = ["model", "name", "version", "protected", "updated_at"]
        read_only_fields = fields


class ModelAliasDetailSerializer(ModelAliasSerializer):
    history = AliasAssignmentSerializer(many=True, source="history_list", read_only=True)

    class Meta(ModelAliasSerializer.Meta):
        fields = [*ModelAliasSerializer.Meta.fields, "history"]
        read_only_fields = fields


class AliasMoveInput(StrictInput):
    version = StrictIntegerField(min_value=1, max_value=PG_INT_MAX)
    protected = StrictBooleanField(
        required=False, help_text="Mark the alias protected (only devops may move it then)."
    )
    reason = reason_field()


# --- Deployments and allocations ---


class AllocationSerializer(serializers.ModelSerializer):
    model = serializers.CharField(source="model_version.registered_model.name")
    version = serializers.IntegerField(source="model_version.version")
    version_id = serializers.IntegerField(source="model_version_id")

    class Meta:
        model = TrafficAllocation
        fields = ["model", "version", "version_id", "weight", "role", "valid_from", "valid_to"]
        read_only_fields = fields


class DeploymentSerializer(serializers.ModelSerializer):
    application = serializers.CharField(source="application.slug")
    endpoint_url = url_or_empty("Endpoint")
    heartbeat_timeout_seconds = serializers.SerializerMethodField()
    allocations = AllocationSerializer(many=True, source="current_allocations", read_only=True)

    class Meta:
        model = Deployment
        fields = [
            "id",
            "application",
            "name",
            "environment",
            "endpoint_url",
            "desired_replicas",
            "heartbeat_timeout_seconds",
            "allocations",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_heartbeat_timeout_seconds(self, obj: Deployment) -> int:
        return int(obj.heartbeat_timeout.total_seconds())


class DeploymentCreateInput(StrictInput):
    application = slug_field(64, help_text="Slug of an existing application.")
    name = slug_field(64)
    environment = StrictChoiceField(
        choices=Deployment.Environment.choices, default=Deployment.Environment.PRODUCTION
    )
    endpoint_url = StrictURLField(required=False, allow_blank=True, max_length=500)
    desired_replicas = StrictIntegerField(required=False, min_value=0, max_value=10_000, default=1)
    heartbeat_timeout_seconds = StrictIntegerField(
        required=False, min_value=1, max_value=86_400 * 7
    )
    reason = reason_field()

    def validate_application(self, value: str) -> Application:
        app = selectors.application_by_slug(value)
        if app is None:
            raise serializers.ValidationError(f"No application {value!r}.")
        return app


class AllocationItemInput(StrictInput):
    model = StrictCharField(max_length=100, help_text="Registered model name.")
    version = StrictIntegerField(min_value=1, max_value=PG_INT_MAX)
    weight = StrictIntegerField(min_value=0, max_value=100, help_text="Percent of live traffic.")
    role = StrictChoiceField(
        choices=TrafficAllocation.Role.choices, default=TrafficAllocation.Role.CONTROL
    )


class AllocationInput(StrictInput):
    allocations = AllocationItemInput(
        many=True,
        min_length=1,
        max_length=50,
        help_text="Non-shadow weights must sum to 100; each version at most once.",
    )
    reason = reason_field()

    def validate_allocations(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Resolve (model, version) pairs in one query; unknown ones are field-level 400s."""
        found = selectors.model_versions_by_number([(i["model"], i["version"]) for i in items])
        errors: list[dict[str, list[str]]] = []
        for item in items:
            mv = found.get((item["model"], item["version"]))
            item["model_version"] = mv
            errors.append(
                {} if mv else {"version": [f"{item['model']} has no version {item['version']}."]}
            )
        if any(errors):
            raise serializers.ValidationError(errors)
        return items


class AllocationStateSerializer(serializers.Serializer):
    deployment = serializers.IntegerField()
    at = serializers.DateTimeField()
    allocations = AllocationSerializer(many=True)


# --- Replicas and audit ---


class ReplicaSerializer(serializers.ModelSerializer):
    application = serializers.CharField(source="deployment.application.slug")
    url = url_or_empty("Probe")
    reported_model = serializers.SerializerMethodField()
    reported_version = serializers.SerializerMethodField()

    class Meta:
        model = Replica
        fields = [
            "id",
            "deployment",
            "application",
            "instance_id",
            "host",
            "url",
            "reported_model",
            "reported_version",
            "reported_sha256",
            "started_at",
            "last_heartbeat_at",
            "last_probe_at",
            "last_probe_verdict",
            "created_at",
        ]
        read_only_fields = fields

    def get_reported_model(self, obj: Replica) -> str | None:
        mv = obj.reported_version
        return mv.registered_model.name if mv else None

    def get_reported_version(self, obj: Replica) -> int | None:
        mv = obj.reported_version
        return mv.version if mv else None


class AuditEventSerializer(serializers.ModelSerializer):
    application = serializers.CharField(source="application.slug", allow_null=True, default=None)
    actor = serializers.CharField(source="actor_label")

    class Meta:
        model = AuditEvent
        fields = [
            "id",
            "at",
            "actor",
            "kind",
            "application",
            "target_type",
            "target_id",
            "target_repr",
            "reason",
            "before",
            "after",
        ]
        read_only_fields = fields


def is_slug(value: str, max_length: int = 100) -> bool:
    return len(value) <= max_length and re.fullmatch(SLUG_RE, value) is not None
