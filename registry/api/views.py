"""Registry REST API v1: applications, models, versions, aliases, deployments, replicas, audit.

Views are thin (STYLE R9): querysets come from registry.selectors, writes validate a small
`XInput` serializer and call a registry service, and domain errors are mapped once by
registry.api.errors. Permissions are checked before any lookup, so a caller without the
scope or role learns nothing about whether an object exists.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views import defaults
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    extend_schema,
    extend_schema_view,
)
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.filters import OrderingFilter
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings

from registry import selectors, services
from registry.models import ApiToken, RegisteredModel
from registry.numbers import ascii_int
from registry.permissions import RegistryWrite
from registry.roles import DEVOPS, PRODUCT, Actor

from . import filters
from .serializers import (
    AliasMoveInput,
    AllocationInput,
    AllocationStateSerializer,
    ApplicationCreateInput,
    ApplicationSerializer,
    ApplicationUpdateInput,
    AuditEventSerializer,
    DeploymentCreateInput,
    DeploymentSerializer,
    ModelAliasDetailSerializer,
    ModelAliasSerializer,
    ModelVersionCreateInput,
    ModelVersionSerializer,
    RegisteredModelCreateInput,
    RegisteredModelSerializer,
    ReplicaSerializer,
    error_responses,
    is_slug,
)

READ_ERRORS = error_responses(401, 403, 404)
LIST_ERRORS = error_responses(400, 401, 403, 404)
WRITE_ERRORS = error_responses(400, 401, 403, 404, 409)


def actor_of(request: Request) -> Actor:
    """Who a write is attributed to: the user, and the token it came through if any."""
    token = request.auth if isinstance(request.auth, ApiToken) else None
    return Actor.of(request.user, token)


def validated(serializer_class: type[serializers.Serializer], request: Request) -> dict[str, Any]:
    body = serializer_class(data=request.data)
    body.is_valid(raise_exception=True)
    return dict(body.validated_data)


def positive_int(value: str) -> int:
    """A path id, or a JSON 404 (not a DB error) for anything that is not one."""
    number = ascii_int(value)
    if number is None:
        raise Http404
    return number


LOOKUP_RE = re.compile(r"[\w.-]{1,200}", re.ASCII)  # what a slug or name can be; no NUL bytes
API_FILTER_BACKENDS = [filters.StrictFilterBackend, OrderingFilter]


class _NoFormatOverride:
    """api_settings, except that `?format=` is a filter (onnx, pickle...), not a renderer."""

    URL_FORMAT_OVERRIDE = None

    def __getattr__(self, name: str) -> Any:
        return getattr(api_settings, name)


class FilterFriendlyNegotiation(DefaultContentNegotiation):
    settings = _NoFormatOverride()


class SafeLookupMixin:
    # Validate the URL lookup value before it reaches the database (NUL bytes, huge ints).

    lookup_value_regex = "[^/]+"

    def get_object(self) -> Any:
        key = self.lookup_url_kwarg or self.lookup_field  # type: ignore[attr-defined]
        value = self.kwargs[key]  # type: ignore[attr-defined]
        if self.lookup_field == "pk":  # type: ignore[attr-defined]
            self.kwargs[key] = positive_int(value)  # type: ignore[attr-defined]
        elif not LOOKUP_RE.fullmatch(value):
            raise Http404
        return super().get_object()  # type: ignore[misc]


class ListApiMixin(SafeLookupMixin):
    """What every registry list endpoint shares: JSON bodies, strict filters, `?format=` free."""

    parser_classes = [JSONParser]
    filter_backends = API_FILTER_BACKENDS
    content_negotiation_class = FilterFriendlyNegotiation


# --- Applications ---


@extend_schema(tags=["applications"])
@extend_schema_view(
    list=extend_schema(
        summary="List applications",
        responses={200: ApplicationSerializer(many=True), **LIST_ERRORS},
    ),
    retrieve=extend_schema(
        summary="One application", responses={200: ApplicationSerializer, **READ_ERRORS}
    ),
    create=extend_schema(
        summary="Create an application (devops, registry:write)",
        request=ApplicationCreateInput,
        responses={201: ApplicationSerializer, **WRITE_ERRORS},
    ),
    partial_update=extend_schema(
        summary="Change an application's name, team, criticality, SLO or description",
        request=ApplicationUpdateInput,
        responses={200: ApplicationSerializer, **WRITE_ERRORS},
    ),
)
class ApplicationViewSet(
    ListApiMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """Applications: the products that consume predictions, with their model-age SLO."""

    serializer_class = ApplicationSerializer
    filterset_class = filters.ApplicationFilterSet
    permission_classes = [RegistryWrite]
    lookup_field = "slug"
    ordering_fields = ["slug", "name", "team", "criticality", "created_at"]
    ordering = ["slug"]
    http_method_names = ["get", "post", "patch", "head", "options"]

    def get_queryset(self) -> QuerySet:
        return selectors.application_list()

    def create(self, request: Request) -> Response:
        data = validated(ApplicationCreateInput, request)
        app = services.create_application(actor=actor_of(request), **data)
        return Response(ApplicationSerializer(app).data, status=status.HTTP_201_CREATED)

    def partial_update(self, request: Request, slug: str) -> Response:
        app = self.get_object()
        data = validated(ApplicationUpdateInput, request)
        app = services.update_application(actor=actor_of(request), application=app, **data)
        return Response(ApplicationSerializer(app).data)


# --- Registered models ---


@extend_schema(tags=["models"])
@extend_schema_view(
    list=extend_schema(
        summary="List registered models",
        responses={200: RegisteredModelSerializer(many=True), **LIST_ERRORS},
    ),
    retrieve=extend_schema(
        summary="One registered model with its aliases",
        responses={200: RegisteredModelSerializer, **READ_ERRORS},
    ),
    create=extend_schema(
        summary="Create a registered model (devops, registry:write)",
        request=RegisteredModelCreateInput,
        responses={201: RegisteredModelSerializer, **WRITE_ERRORS},
    ),
)
class RegisteredModelViewSet(
    ListApiMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """Registered models, looked up by name, with their aliases."""

    serializer_class = RegisteredModelSerializer
    filterset_class = filters.RegisteredModelFilterSet
    permission_classes = [RegistryWrite]
    lookup_field = "name"
    ordering_fields = ["name", "team", "created_at"]
    ordering = ["name"]

    def get_queryset(self) -> QuerySet:
        return selectors.registered_model_list()

    def create(self, request: Request) -> Response:
        data = validated(RegisteredModelCreateInput, request)
        model = services.create_registered_model(actor=actor_of(request), **data)
        model.alias_list = []
        return Response(RegisteredModelSerializer(model).data, status=status.HTTP_201_CREATED)


def registered_model_or_404(name: str) -> RegisteredModel:
    model = selectors.registered_model_by_name(name) if is_slug(name) else None
    if model is None:
        raise Http404
    return model


# --- Versions of one model ---

VERSION_PATH = [
    OpenApiParameter("name", OpenApiTypes.STR, OpenApiParameter.PATH, description="Model name."),
]


@extend_schema(tags=["models"])
@extend_schema_view(
    list=extend_schema(
        summary="List the versions of a model, newest first",
        parameters=VERSION_PATH,
        responses={200: ModelVersionSerializer(many=True), **LIST_ERRORS},
    ),
    retrieve=extend_schema(
        summary="One version of a model",
        parameters=[
            *VERSION_PATH,
            OpenApiParameter("version", OpenApiTypes.INT, OpenApiParameter.PATH),
        ],
        responses={200: ModelVersionSerializer, **READ_ERRORS},
    ),
    create=extend_schema(
        summary="Register a new version (devops, registry:write)",
        description="The version number is the next one unless given; a taken number is a 409.",
        parameters=VERSION_PATH,
        request=ModelVersionCreateInput,
        responses={201: ModelVersionSerializer, **WRITE_ERRORS},
    ),
)
class ModelVersionsViewSet(viewsets.GenericViewSet):
    """The versions of one registered model (routed explicitly in registry/api/urls.py)."""

    parser_classes = [JSONParser]
    serializer_class = ModelVersionSerializer
    permission_classes = [RegistryWrite]
    filter_backends: list[Any] = []

    def get_queryset(self) -> QuerySet:
        model = registered_model_or_404(self.kwargs["name"])
        return selectors.model_version_list().filter(registered_model=model).order_by("-version")

    def list(self, request: Request, name: str) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(ModelVersionSerializer(page, many=True).data)

    def retrieve(self, request: Request, name: str, version: str) -> Response:
        mv = self.get_queryset().filter(version=positive_int(version)).first()
        if mv is None:
            raise Http404
        return Response(ModelVersionSerializer(mv).data)

    def create(self, request: Request, name: str) -> Response:
        model = registered_model_or_404(name)
        data = validated(ModelVersionCreateInput, request)
        mv = services.register_version(actor=actor_of(request), registered_model=model, **data)
        return Response(ModelVersionSerializer(mv).data, status=status.HTTP_201_CREATED)


# --- Aliases of one model ---

ALIAS_PATH = [
    *VERSION_PATH,
    OpenApiParameter("alias", OpenApiTypes.STR, OpenApiParameter.PATH, description="e.g. champion"),
]


@extend_schema(tags=["models"])
@extend_schema_view(
    list=extend_schema(
        summary="List a model's aliases",
        parameters=VERSION_PATH,
        responses={200: ModelAliasSerializer(many=True), **LIST_ERRORS},
    ),
    retrieve=extend_schema(
        summary="One alias with its history (which version it named when)",
        parameters=ALIAS_PATH,
        responses={200: ModelAliasDetailSerializer, **READ_ERRORS},
    ),
)
class ModelAliasesViewSet(viewsets.GenericViewSet):
    """Aliases of one model: movable names such as champion, with their history."""

    parser_classes = [JSONParser]
    serializer_class = ModelAliasSerializer
    permission_classes = [RegistryWrite]
    # Product teams may move unprotected aliases (challenger, staging); move_alias guards the rest.
    write_roles = (DEVOPS, PRODUCT)
    filter_backends: list[Any] = []

    def get_queryset(self) -> QuerySet:
        model = registered_model_or_404(self.kwargs["name"])
        return selectors.alias_list().filter(registered_model=model).order_by("name")

    def list(self, request: Request, name: str) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(ModelAliasSerializer(page, many=True).data)

    def _detail(self, model: RegisteredModel, alias: str) -> Response:
        obj = selectors.alias_detail_list().filter(registered_model=model, name=alias).first()
        if obj is None:
            raise Http404
        return Response(ModelAliasDetailSerializer(obj).data)

    def retrieve(self, request: Request, name: str, alias: str) -> Response:
        model = registered_model_or_404(name)
        if not is_slug(alias, 50):
            raise Http404
        return self._detail(model, alias)

    @extend_schema(
        summary="Point an alias at a version (creates it if new)",
        description=(
            "Needs registry:write and the devops or product role; protected aliases "
            "(e.g. champion) move only for devops, others get 403."
        ),
        parameters=ALIAS_PATH,
        request=AliasMoveInput,
        responses={200: ModelAliasDetailSerializer, **WRITE_ERRORS},
    )
    def move(self, request: Request, name: str, alias: str) -> Response:
        model = registered_model_or_404(name)
        data = validated(AliasMoveInput, request)
        if not is_slug(alias, 50):
            raise serializers.ValidationError(
                {"alias": ["Use up to 50 lowercase letters, digits, - and _."]}
            )
        versions = selectors.model_version_list().filter(registered_model=model)
        mv = versions.filter(version=data["version"]).first()
        if mv is None:
            raise serializers.ValidationError({"version": [f"{name} has no such version."]})
        services.move_alias(
            actor=actor_of(request),
            registered_model=model,
            name=alias,
            version=mv,
            protected=data.get("protected"),
            reason=data.get("reason", ""),
        )
        return self._detail(model, alias)


# --- All versions ---


@extend_schema(tags=["versions"])
@extend_schema_view(
    list=extend_schema(
        summary="List versions across models",
        responses={200: ModelVersionSerializer(many=True), **LIST_ERRORS},
    ),
    retrieve=extend_schema(
        summary="One version by id", responses={200: ModelVersionSerializer, **READ_ERRORS}
    ),
)
class VersionViewSet(ListApiMixin, viewsets.ReadOnlyModelViewSet):
    """Model versions across all registered models."""

    serializer_class = ModelVersionSerializer
    filterset_class = filters.ModelVersionFilterSet
    ordering_fields = ["trained_at", "created_at", "version", "size_bytes"]
    ordering = ["-created_at", "-id"]

    def get_queryset(self) -> QuerySet:
        return selectors.model_version_list()


# --- Deployments ---

DEPLOYMENT_ID = [OpenApiParameter("id", OpenApiTypes.INT, OpenApiParameter.PATH)]


@extend_schema(tags=["deployments"])
@extend_schema_view(
    list=extend_schema(
        summary="List deployments with their current allocations",
        responses={200: DeploymentSerializer(many=True), **LIST_ERRORS},
    ),
    retrieve=extend_schema(
        summary="One deployment with its current allocation",
        parameters=DEPLOYMENT_ID,
        responses={200: DeploymentSerializer, **READ_ERRORS},
    ),
    create=extend_schema(
        summary="Create a deployment (devops, registry:write)",
        request=DeploymentCreateInput,
        responses={201: DeploymentSerializer, **WRITE_ERRORS},
    ),
)
class DeploymentViewSet(
    ListApiMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """Deployments with the traffic split currently in force."""

    serializer_class = DeploymentSerializer
    filterset_class = filters.DeploymentFilterSet
    permission_classes = [RegistryWrite]
    ordering_fields = ["id", "name", "created_at"]
    ordering = ["id"]

    def get_queryset(self) -> QuerySet:
        return selectors.deployment_list()

    def create(self, request: Request) -> Response:
        data = validated(DeploymentCreateInput, request)
        seconds = data.pop("heartbeat_timeout_seconds", None)
        deployment = services.create_deployment(
            actor=actor_of(request),
            heartbeat_timeout=timedelta(seconds=seconds) if seconds else None,
            **data,
        )
        return Response(self._fresh(deployment.pk), status=status.HTTP_201_CREATED)

    @extend_schema(
        summary="The traffic split in force now, or at instant `at`",
        parameters=[
            *DEPLOYMENT_ID,
            OpenApiParameter("at", OpenApiTypes.DATETIME, description="ISO 8601; default now."),
        ],
        responses={200: AllocationStateSerializer, **LIST_ERRORS},
    )
    def allocation(self, request: Request, pk: str) -> Response:
        deployment = self.get_object()
        at_raw = request.query_params.get("at")
        at = timezone.now()
        if at_raw:
            field = serializers.DateTimeField()
            try:
                at = field.to_internal_value(at_raw)
            except serializers.ValidationError as exc:
                raise serializers.ValidationError({"at": exc.detail}) from exc
        rows = selectors.allocations_at(deployment_ids=[deployment.pk], at=at).select_related(
            "model_version__registered_model"
        )
        body = {"deployment": deployment.pk, "at": at, "allocations": rows}
        return Response(AllocationStateSerializer(body).data)

    @extend_schema(
        summary="Replace the traffic split (devops, registry:write)",
        description=(
            "Closes the current rows and opens new ones; non-shadow weights must sum to 100. "
            "Unknown model versions are field-level 400s."
        ),
        parameters=DEPLOYMENT_ID,
        request=AllocationInput,
        responses={200: DeploymentSerializer, **WRITE_ERRORS},
    )
    def set_allocation(self, request: Request, pk: str) -> Response:
        deployment = self.get_object()
        data = validated(AllocationInput, request)
        specs = [
            services.AllocationSpec(i["model_version"], i["weight"], i["role"])
            for i in data["allocations"]
        ]
        services.set_allocation(
            actor=actor_of(request),
            deployment=deployment,
            allocations=specs,
            reason=data.get("reason", ""),
        )
        return Response(self._fresh(deployment.pk))

    def _fresh(self, pk: int) -> dict[str, Any]:
        return DeploymentSerializer(selectors.deployment_list().get(pk=pk)).data


# --- Replicas and audit events ---


@extend_schema(tags=["replicas"])
@extend_schema_view(
    list=extend_schema(
        summary="List replicas and what each last reported",
        responses={200: ReplicaSerializer(many=True), **LIST_ERRORS},
    ),
    retrieve=extend_schema(
        summary="One replica", responses={200: ReplicaSerializer, **READ_ERRORS}
    ),
)
class ReplicaViewSet(ListApiMixin, viewsets.ReadOnlyModelViewSet):
    """Replicas behind each deployment, as they last reported themselves."""

    serializer_class = ReplicaSerializer
    filterset_class = filters.ReplicaFilterSet
    ordering_fields = ["id", "instance_id", "last_heartbeat_at"]
    ordering = ["deployment_id", "instance_id"]

    def get_queryset(self) -> QuerySet:
        return selectors.replica_list()


@extend_schema(tags=["audit"])
@extend_schema_view(
    list=extend_schema(
        summary="The audit log, newest first",
        responses={200: AuditEventSerializer(many=True), **LIST_ERRORS},
    ),
    retrieve=extend_schema(
        summary="One audit event", responses={200: AuditEventSerializer, **READ_ERRORS}
    ),
)
class AuditEventViewSet(ListApiMixin, viewsets.ReadOnlyModelViewSet):
    """The audit log: who changed what, when and why."""

    serializer_class = AuditEventSerializer
    filterset_class = filters.AuditEventFilterSet
    ordering_fields = ["at", "id"]
    ordering = ["-at", "-id"]

    def get_queryset(self) -> QuerySet:
        return selectors.audit_event_list()


# --- URLs that match no route ---


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """handler404: API clients get the common JSON error shape, browsers the HTML page."""
    if request.path.startswith("/api/"):
        body = {"error": {"status": 404, "code": "not_found", "message": "Not found."}}
        return JsonResponse(body, status=404)
    return defaults.page_not_found(request, exception)
