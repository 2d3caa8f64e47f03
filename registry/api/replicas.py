"""Replica consistency API: heartbeats, golden sets and the checks the probes stored.

POST /api/v1/replicas/heartbeat        replica:write (sidecar / replica itself)
/api/v1/golden-sets/                   read: read; write: registry:write + devops
GET  /api/v1/consistency-checks/       read
"""

from __future__ import annotations

from typing import Any

import django_filters as filters
from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema, extend_schema_field, extend_schema_view
from rest_framework import serializers, status, viewsets
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from registry import replica_selectors
from registry.models import (
    ConsistencyCheck,
    GoldenSet,
    ModelVersion,
    RegisteredModel,
    ReplicaProbeResult,
)
from registry.numbers import ascii_int
from registry.permissions import RegistryWrite, ReplicaWrite
from registry.services import record_heartbeat
from registry.services.probes import delete_golden_set, save_golden_set

from .serializers import (
    PG_BIGINT_MAX,
    StrictBooleanField,
    StrictCharField,
    StrictChoiceField,
    StrictDateTimeField,
    StrictFloatField,
    StrictInput,
    StrictIntegerField,
    StrictRegexField,
    StrictURLField,
    error_responses,
    reason_field,
    slug_field,
)
from .views import SafeLookupMixin, actor_of, validated

READ_ERRORS = error_responses(401, 403, 404)
LIST_ERRORS = error_responses(400, 401, 403, 404)  # 404: a page past the end
WRITE_ERRORS = error_responses(400, 401, 403, 404, 409)


# --- Heartbeats ---


@extend_schema_field(
    {"oneOf": [{"type": "integer", "minimum": 1}, {"type": "string", "example": "shop/prod"}]}
)
class DeploymentRefField(serializers.Field):
    """A deployment id, or "application-slug/deployment-name"."""

    default_error_messages = {
        "invalid": 'Give a deployment id or "application-slug/deployment-name".',
        "unknown": "Unknown deployment.",
    }

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, bool) or not isinstance(data, int | str):
            self.fail("invalid")
        if isinstance(data, int) and not 0 < data <= PG_BIGINT_MAX:
            self.fail("unknown")
        if isinstance(data, str) and (len(data) > 200 or "\x00" in data):
            self.fail("invalid")
        if isinstance(data, str) and data.isdigit() and ascii_int(data) is None:
            self.fail("unknown")  # Unicode digits, or more than a bigint holds
        deployment = replica_selectors.deployment_by_ref(data)
        if deployment is None:
            self.fail("unknown")
        return deployment

    def to_representation(self, value: Any) -> Any:
        return value.pk


class HeartbeatInput(StrictInput):
    deployment = DeploymentRefField()
    instance_id = StrictCharField(
        max_length=200, help_text="Pod or instance name, unique per deployment."
    )
    host = StrictCharField(required=False, allow_blank=True, max_length=255, default="")
    url = StrictURLField(
        required=False,
        allow_blank=True,
        max_length=500,
        default="",
        help_text="Base URL where probes reach this replica (POST <url>/predict).",
    )
    model = slug_field(100, required=False, help_text="Registered model name (with version).")
    version = StrictIntegerField(required=False, min_value=1, max_value=2**31 - 1)
    sha256 = StrictRegexField(
        r"^[0-9a-fA-F]{64}$",
        required=False,
        error_messages={"invalid": "Enter a sha256 as 64 hex digits."},
        help_text="sha256 of the artifact the replica actually loaded.",
    )
    started_at = StrictDateTimeField(required=False, allow_null=True, default=None)

    def validate_url(self, value: str) -> str:
        if value and not value.lower().startswith(("http://", "https://")):
            raise serializers.ValidationError("Use an http:// or https:// URL.")
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        model, number = attrs.pop("model", None), attrs.pop("version", None)
        if (model is None) != (number is None):
            missing = "version" if number is None else "model"
            raise serializers.ValidationError({missing: ["Give model and version together."]})
        if model is None and "sha256" not in attrs:
            raise serializers.ValidationError(
                {"sha256": ["Give the artifact sha256, or model and version."]}
            )
        # the usual heartbeat reports an allocated version: found among these, no more queries
        allocated = replica_selectors.allocated_versions(attrs["deployment"])
        attrs["allocated"] = allocated
        attrs["model_version"] = None
        sha256 = attrs["sha256"] = attrs.get("sha256", "").lower()
        if model is not None:
            mv = next(
                (v for v in allocated if (v.registered_model.name, v.version) == (model, number)),
                None,
            ) or replica_selectors.version_by_number(model_name=model, version=number)
            if mv is None:
                raise serializers.ValidationError({"version": [f"No version {number} of {model}."]})
            attrs["model_version"] = mv
        elif sha256:
            attrs["model_version"] = next(
                (v for v in allocated if v.sha256 == sha256), None
            ) or replica_selectors.version_by_sha256(
                deployment=attrs["deployment"], sha256=sha256
            )  # fmt: skip
        return attrs


class HeartbeatSerializer(serializers.Serializer):
    replica = serializers.IntegerField(help_text="Replica id.")
    deployment = serializers.IntegerField()
    instance_id = serializers.CharField()
    reported_sha256 = serializers.CharField()
    reported_model = serializers.CharField(allow_null=True)
    reported_version = serializers.IntegerField(allow_null=True)
    expected_sha256 = serializers.ListField(
        child=serializers.CharField(), help_text="Artifacts of the versions allocated now."
    )
    mismatched = serializers.BooleanField(help_text="The reported artifact is not allocated.")
    heartbeat_timeout_seconds = serializers.IntegerField()


@extend_schema(tags=["replicas"])
class HeartbeatView(APIView):
    """A replica (or its sidecar) says it is alive and which artifact it serves."""

    parser_classes = [JSONParser]
    permission_classes = [ReplicaWrite]

    @extend_schema(
        summary="Replica heartbeat (replica:write)",
        description=(
            "Upserts the replica in one statement; unknown replicas register themselves. "
            "A replica silent for longer than its deployment's heartbeat timeout is stale; "
            "one whose sha256 matches no version allocated to the deployment is mismatched."
        ),
        request=HeartbeatInput,
        responses={200: HeartbeatSerializer, **error_responses(400, 401, 403)},
    )
    def post(self, request: Request) -> Response:
        data = validated(HeartbeatInput, request)
        deployment = data["deployment"]
        allocated: list[ModelVersion] = data.pop("allocated")
        replica = record_heartbeat(**data)
        expected = sorted({v.sha256 for v in allocated})
        mv: ModelVersion | None = data["model_version"]
        body = {
            "replica": replica.pk,
            "deployment": deployment.pk,
            "instance_id": replica.instance_id,
            "reported_sha256": replica.reported_sha256,
            "reported_model": mv.registered_model.name if mv else None,
            "reported_version": mv.version if mv else None,
            "expected_sha256": expected,
            "mismatched": replica.reported_sha256 not in expected,
            "heartbeat_timeout_seconds": int(deployment.heartbeat_timeout.total_seconds()),
        }
        # already HeartbeatSerializer's representation (the schema documents it): building
        # that serializer per heartbeat deep-copied its fields for nothing
        return Response(body)


# --- Golden sets ---


class GoldenInputSerializer(StrictInput):
    name = StrictCharField(max_length=100, help_text="Unique within the set.")
    input = serializers.JSONField(help_text='Sent to replicas as {"inputs": <input>}.')
    expected = serializers.JSONField(
        required=False, allow_null=True, help_text="Expected outputs; omit to compare replicas."
    )


class GoldenSetSerializer(serializers.ModelSerializer):
    model = serializers.CharField(source="registered_model.name")
    inputs = GoldenInputSerializer(many=True)

    class Meta:
        model = GoldenSet
        fields = [
            "id",
            "model",
            "name",
            "description",
            "rule",
            "abs_tolerance",
            "rel_tolerance",
            "top_k",
            "min_overlap",
            "inputs",
            "active",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class GoldenSetInput(StrictInput):
    model = slug_field(100, help_text="Registered model name.")
    name = slug_field(100)
    description = StrictCharField(required=False, allow_blank=True, max_length=10_000)
    rule = StrictChoiceField(choices=GoldenSet.Rule.choices, default=GoldenSet.Rule.EXACT)
    abs_tolerance = StrictFloatField(required=False, min_value=0, default=0.0)
    rel_tolerance = StrictFloatField(required=False, min_value=0, default=0.0)
    top_k = StrictIntegerField(required=False, allow_null=True, min_value=1, max_value=10_000)
    min_overlap = StrictFloatField(required=False, min_value=0, max_value=1, default=1.0)
    inputs = GoldenInputSerializer(many=True, min_length=1, max_length=500)
    active = StrictBooleanField(required=False, default=True)
    reason = reason_field()

    def validate_model(self, value: str) -> RegisteredModel:
        model = RegisteredModel.objects.filter(name=value).first()
        if model is None:
            raise serializers.ValidationError("Unknown model.")
        return model


class GoldenSetPatchInput(GoldenSetInput):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, partial=True, **kwargs)


class GoldenSetFilterSet(filters.FilterSet):
    model = filters.CharFilter(field_name="registered_model__name", help_text="Model name.")
    rule = filters.ChoiceFilter(choices=GoldenSet.Rule.choices)

    class Meta:
        model = GoldenSet
        fields = ["model", "rule"]


def _golden_kwargs(data: dict[str, Any]) -> dict[str, Any]:
    data = dict(data)
    data["registered_model"] = data.pop("model")
    data["inputs"] = [dict(item) for item in data["inputs"]]
    return data


@extend_schema(tags=["golden-sets"])
@extend_schema_view(
    list=extend_schema(
        summary="List golden sets", responses={200: GoldenSetSerializer(many=True), **LIST_ERRORS}
    ),
    retrieve=extend_schema(
        summary="One golden set", responses={200: GoldenSetSerializer, **READ_ERRORS}
    ),
    create=extend_schema(
        summary="Create a golden set (devops, registry:write)",
        request=GoldenSetInput,
        responses={201: GoldenSetSerializer, **WRITE_ERRORS},
    ),
    update=extend_schema(
        summary="Replace a golden set (devops, registry:write)",
        request=GoldenSetInput,
        responses={200: GoldenSetSerializer, **WRITE_ERRORS},
    ),
    partial_update=extend_schema(
        summary="Change some fields of a golden set (devops, registry:write)",
        request=GoldenSetPatchInput,
        responses={200: GoldenSetSerializer, **WRITE_ERRORS},
    ),
    destroy=extend_schema(
        summary="Delete a golden set (devops, registry:write)",
        responses={204: None, **error_responses(401, 403, 404)},
    ),
)
class GoldenSetViewSet(SafeLookupMixin, viewsets.ModelViewSet):
    """Golden inputs per registered model, with the rule that compares replicas' answers."""

    parser_classes = [JSONParser]
    serializer_class = GoldenSetSerializer
    filterset_class = GoldenSetFilterSet
    permission_classes = [RegistryWrite]
    ordering_fields = ["id", "name", "created_at"]
    ordering = ["registered_model__name", "name"]

    def get_queryset(self) -> QuerySet:
        return replica_selectors.golden_set_list()

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        data = _golden_kwargs(validated(GoldenSetInput, request))
        gs = save_golden_set(actor=actor_of(request), **data)
        return Response(GoldenSetSerializer(gs).data, status=status.HTTP_201_CREATED)

    def update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        gs = self.get_object()
        body_class = GoldenSetPatchInput if kwargs.get("partial") else GoldenSetInput
        changes = validated(body_class, request)
        current = {
            "model": gs.registered_model,
            "name": gs.name,
            "description": gs.description,
            "rule": gs.rule,
            "abs_tolerance": gs.abs_tolerance,
            "rel_tolerance": gs.rel_tolerance,
            "top_k": gs.top_k,
            "min_overlap": gs.min_overlap,
            "inputs": gs.inputs,
            "active": gs.active,
        }
        data = _golden_kwargs({**current, **changes})
        gs = save_golden_set(actor=actor_of(request), golden_set=gs, **data)
        return Response(GoldenSetSerializer(gs).data)

    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        gs = self.get_object()
        delete_golden_set(actor=actor_of(request), golden_set=gs)
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- Consistency checks ---


class ProbeResultSerializer(serializers.ModelSerializer):
    instance_id = serializers.CharField(source="replica.instance_id")
    host = serializers.CharField(source="replica.host")
    reported_model = serializers.SerializerMethodField()
    reported_version = serializers.SerializerMethodField()
    first_difference = serializers.JSONField()

    class Meta:
        model = ReplicaProbeResult
        fields = [
            "replica",
            "instance_id",
            "host",
            "verdict",
            "latency_ms",
            "answered",
            "reported_sha256",
            "reported_model",
            "reported_version",
            "first_difference",
            "detail",
        ]
        read_only_fields = fields

    def get_reported_model(self, obj: ReplicaProbeResult) -> str | None:
        mv = obj.reported_version
        return mv.registered_model.name if mv else None

    def get_reported_version(self, obj: ReplicaProbeResult) -> int | None:
        return obj.reported_version.version if obj.reported_version else None


class ConsistencyCheckSerializer(serializers.ModelSerializer):
    deployment_name = serializers.CharField(source="deployment.__str__")
    counts = serializers.DictField(child=serializers.IntegerField())
    results = ProbeResultSerializer(many=True, source="result_list")

    class Meta:
        model = ConsistencyCheck
        fields = [
            "id",
            "deployment",
            "deployment_name",
            "started_at",
            "finished_at",
            "outcome",
            "trigger",
            "triggered_by",
            "inputs_sent",
            "counts",
            "note",
            "results",
        ]
        read_only_fields = fields


class ConsistencyCheckFilterSet(filters.FilterSet):
    deployment = filters.NumberFilter(
        method="filter_deployment", help_text="Deployment id.", min_value=1
    )
    outcome = filters.ChoiceFilter(choices=ConsistencyCheck.Outcome.choices)

    class Meta:
        model = ConsistencyCheck
        fields = ["deployment", "outcome"]

    def filter_deployment(self, queryset: QuerySet, name: str, value: Any) -> QuerySet:
        if value != int(value) or not 0 < value <= PG_BIGINT_MAX:
            return queryset.none()
        return queryset.filter(deployment_id=int(value))


@extend_schema(tags=["replicas"])
@extend_schema_view(
    list=extend_schema(
        summary="Consistency checks of replicas, newest first",
        responses={200: ConsistencyCheckSerializer(many=True), **LIST_ERRORS},
    ),
    retrieve=extend_schema(
        summary="One consistency check with its per-replica verdicts",
        responses={200: ConsistencyCheckSerializer, **READ_ERRORS},
    ),
)
class ConsistencyCheckViewSet(SafeLookupMixin, viewsets.ReadOnlyModelViewSet):
    """Golden-input probe runs: per replica, verdict, latency and the first differing answer."""

    serializer_class = ConsistencyCheckSerializer
    filterset_class = ConsistencyCheckFilterSet
    ordering_fields = ["started_at", "id"]
    ordering = ["-started_at", "-id"]

    def get_queryset(self) -> QuerySet:
        return replica_selectors.consistency_check_list()
