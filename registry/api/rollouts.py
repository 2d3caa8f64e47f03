"""Rollouts API: list, retrieve and create drafts; one POST action per state transition.

The analysis of a rollout (`GET /api/v1/rollouts/{id}/analysis`) reads feedback rollups, so
it lives in feedback.api (registry never imports feedback).
"""

from __future__ import annotations

from typing import Any

import django_filters as filters
from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response

from registry import services
from registry.models import Deployment, ModelVersion, Rollout
from registry.permissions import RegistryWrite
from registry.rollout_selectors import rollout_list
from registry.services.rollouts import GUARDRAIL_METRICS

from .serializers import (
    PG_BIGINT_MAX,
    StrictCharField,
    StrictChoiceField,
    StrictFloatField,
    StrictInput,
    StrictIntegerField,
    error_responses,
)
from .views import SafeLookupMixin, actor_of, validated

READ_ERRORS = error_responses(401, 403, 404)
LIST_ERRORS = error_responses(400, 401, 403, 404)
WRITE_ERRORS = error_responses(400, 401, 403, 404, 409)
ROLLOUT_ID = [OpenApiParameter("id", OpenApiTypes.INT, OpenApiParameter.PATH)]

# --- Serializers ---


class RolloutVersionSerializer(serializers.ModelSerializer):
    model = serializers.CharField(source="registered_model.name")

    class Meta:
        model = ModelVersion
        fields = ["id", "model", "version"]


class RolloutSerializer(serializers.ModelSerializer):
    application = serializers.CharField(source="deployment.application.slug")
    baseline_version = RolloutVersionSerializer()
    candidate_version = RolloutVersionSerializer()
    current_percent = serializers.IntegerField(allow_null=True)
    created_by = serializers.SerializerMethodField()

    class Meta:
        model = Rollout
        fields = [
            "id",
            "application",
            "deployment",
            "strategy",
            "state",
            "baseline_version",
            "candidate_version",
            "steps",
            "current_step",
            "current_percent",
            "step_started_at",
            "guardrails",
            "on_failure",
            "started_at",
            "finished_at",
            "created_by",
            "created_at",
            "updated_at",
        ]

    def get_created_by(self, rollout: Rollout) -> str | None:
        return rollout.created_by.get_username() if rollout.created_by else None


class RolloutStepInput(StrictInput):
    percent = StrictIntegerField(min_value=1, max_value=100)
    min_duration_s = StrictIntegerField(min_value=0, max_value=10**8, required=False)
    min_sample = StrictIntegerField(min_value=0, max_value=10**12, required=False)


class GuardrailInput(StrictInput):
    metric = StrictChoiceField(choices=sorted(GUARDRAIL_METRICS))
    max_drop = StrictFloatField(
        min_value=0, max_value=1, required=False, help_text="Tolerated relative degradation."
    )
    min_sample = StrictIntegerField(min_value=1, max_value=10**12, required=False)


class RolloutCreateInput(StrictInput):
    deployment = StrictIntegerField(min_value=1, max_value=PG_BIGINT_MAX)
    strategy = StrictChoiceField(choices=Rollout.Strategy.choices)
    baseline_version = StrictIntegerField(min_value=1, max_value=PG_BIGINT_MAX)
    candidate_version = StrictIntegerField(min_value=1, max_value=PG_BIGINT_MAX)
    steps = RolloutStepInput(many=True, required=False)
    guardrails = GuardrailInput(many=True, required=False)
    on_failure = StrictChoiceField(choices=Rollout.OnFailure.choices, required=False)
    reason = StrictCharField(required=False, allow_blank=True, max_length=2000)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        lookups = {
            "deployment": Deployment.objects.select_related("application"),
            "baseline_version": ModelVersion.objects.all(),
            "candidate_version": ModelVersion.objects.all(),
        }
        for name, queryset in lookups.items():
            obj = queryset.filter(pk=attrs[name]).first()
            if obj is None:
                raise serializers.ValidationError({name: [f"No such {name.replace('_', ' ')}."]})
            attrs[name] = obj
        return attrs


class RolloutTransitionInput(StrictInput):
    reason = StrictCharField(max_length=2000, help_text="Why; written into the audit log.")


# --- Filters ---


class RolloutFilterSet(filters.FilterSet):
    state = filters.MultipleChoiceFilter(choices=Rollout.State.choices)
    strategy = filters.ChoiceFilter(choices=Rollout.Strategy.choices)
    application = filters.CharFilter(field_name="deployment__application__slug")
    deployment = filters.NumberFilter(field_name="deployment_id", min_value=1, max_value=2**62)

    class Meta:
        model = Rollout
        fields = ["state", "strategy", "application", "deployment"]


# --- Views ---


def _transition_schema(verb: str, what: str) -> Any:
    return extend_schema(
        summary=f"{verb} the rollout (devops, registry:write)",
        description=f"{what} Illegal from the rollout's current state: 409.",
        parameters=ROLLOUT_ID,
        request=RolloutTransitionInput,
        responses={200: RolloutSerializer, **WRITE_ERRORS},
    )


@extend_schema(tags=["rollouts"])
@extend_schema_view(
    list=extend_schema(
        summary="List rollouts", responses={200: RolloutSerializer(many=True), **LIST_ERRORS}
    ),
    retrieve=extend_schema(
        summary="One rollout",
        parameters=ROLLOUT_ID,
        responses={200: RolloutSerializer, **READ_ERRORS},
    ),
    create=extend_schema(
        summary="Create a draft rollout (devops, registry:write)",
        request=RolloutCreateInput,
        responses={201: RolloutSerializer, **WRITE_ERRORS},
    ),
)
class RolloutViewSet(
    SafeLookupMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    """Rollouts of a candidate version against a baseline, and their state transitions."""

    parser_classes = [JSONParser]
    serializer_class = RolloutSerializer
    filterset_class = RolloutFilterSet
    permission_classes = [RegistryWrite]
    ordering_fields = ["id", "created_at", "started_at"]
    ordering = ["-id"]

    def get_queryset(self) -> QuerySet[Rollout]:
        return rollout_list()

    def create(self, request: Request) -> Response:
        data = validated(RolloutCreateInput, request)
        rollout = services.create_rollout(actor=actor_of(request), **data)
        return Response(self._fresh(rollout.pk), status=status.HTTP_201_CREATED)

    def _act(self, request: Request, name: str) -> Response:
        rollout = self.get_object()
        data = validated(RolloutTransitionInput, request)
        services.ROLLOUT_ACTIONS[name](
            actor=actor_of(request), rollout_id=rollout.pk, reason=data["reason"]
        )
        return Response(self._fresh(rollout.pk))

    def _fresh(self, pk: int) -> dict[str, Any]:
        return RolloutSerializer(rollout_list().get(pk=pk)).data

    @_transition_schema("Start", "Draft → running; the candidate gets its first step's traffic.")
    @action(detail=True, methods=["post"])
    def start(self, request: Request, pk: str) -> Response:
        return self._act(request, "start")

    @_transition_schema("Pause", "Running → paused; the candidate is drained to 0 %.")
    @action(detail=True, methods=["post"])
    def pause(self, request: Request, pk: str) -> Response:
        return self._act(request, "pause")

    @_transition_schema("Resume", "Paused → running at the current step; its clock restarts.")
    @action(detail=True, methods=["post"])
    def resume(self, request: Request, pk: str) -> Response:
        return self._act(request, "resume")

    @_transition_schema("Advance", "Running: next step; past the last step, promoted.")
    @action(detail=True, methods=["post"])
    def advance(self, request: Request, pk: str) -> Response:
        return self._act(request, "advance")

    @_transition_schema("Promote", "Running or paused → promoted; the candidate serves 100 %.")
    @action(detail=True, methods=["post"])
    def promote(self, request: Request, pk: str) -> Response:
        return self._act(request, "promote")

    @_transition_schema("Roll back", "Running or paused → rolled_back; the baseline serves 100 %.")
    @action(detail=True, methods=["post"])
    def rollback(self, request: Request, pk: str) -> Response:
        return self._act(request, "rollback")

    @_transition_schema("Abort", "Draft, running or paused → aborted; the baseline serves 100 %.")
    @action(detail=True, methods=["post"])
    def abort(self, request: Request, pk: str) -> Response:
        return self._act(request, "abort")
