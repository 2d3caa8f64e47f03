"""Feedback API: bulk ingest (202 + batch URL), batch status, reports (STYLE R9)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import mixins, status, viewsets
from rest_framework.authentication import SessionAuthentication
from rest_framework.decorators import action
from rest_framework.exceptions import UnsupportedMediaType
from rest_framework.parsers import JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from registry.auth import BearerTokenAuthentication
from registry.exceptions import InvalidInput
from registry.models import ApiToken, Application, ModelVersion
from registry.numbers import ascii_int
from registry.permissions import FeedbackWrite, ScopedPermission
from registry.replica_selectors import version_by_number
from registry.roles import DEVOPS, Actor
from registry.throttling import SlidingWindowScopedRateThrottle

from .. import selectors, services
from ..constants import MAX_REQUEST_BYTES
from ..models import FeedbackReport, IngestBatch
from ..services import EnvelopeError
from ..services.event_checks import parse_version_ref
from .serializers import (
    FeedbackEventInput,
    FeedbackReportInput,
    FeedbackReportSerializer,
    FeedbackUploadInput,
    IngestBatchSerializer,
    ReportTransitionInput,
)

Format = IngestBatch.Format
ERROR = OpenApiTypes.OBJECT
BODY_FORMATS = {
    "": Format.JSON,
    "application/json": Format.JSON,
    "application/x-ndjson": Format.JSONL,
    "application/jsonl": Format.JSONL,
    "text/csv": Format.CSV,
}
FILE_FORMATS = {
    "csv": Format.CSV,
    "jsonl": Format.JSONL,
    "ndjson": Format.JSONL,
    "json": Format.JSON,
}


EVENT_FIELDS = "**Event fields**\n\n" + "\n".join(
    f"- `{name}`{'' if field.required else ' (optional)'}: {field.help_text}"
    for name, field in FeedbackEventInput().fields.items()
)
EXAMPLE_EVENTS = [
    {
        "event_id": "3f1c9a52-8a4e-4d61-9d0b-6c1f2e7a9b10",
        "occurred_at": "2026-01-31T12:00:00Z",
        "application": "recommender",
        "kind": "impression",
        "request_id": "req-123",
    },
    {
        "event_id": "7d2e4b61-0c3f-4a8e-b1d2-5e6f7a8b9c0d",
        "occurred_at": "2026-01-31T12:00:05Z",
        "application": "recommender",
        "kind": "click",
        "request_id": "req-123",
        "segment": "web",
    },
]


def read_body(request: Request) -> bytes:
    """The raw body, refused with 413 past MAX_REQUEST_BYTES without reading it all."""
    declared = request.META.get("CONTENT_LENGTH") or "0"
    if (size := ascii_int(declared, max_digits=30)) is not None and size > MAX_REQUEST_BYTES:
        raise EnvelopeError(
            f"the body is {declared} bytes; the limit is {MAX_REQUEST_BYTES}",
            status=413,
            code="too_large",
        )
    django_request = request._request
    if hasattr(django_request, "_body"):
        raw = django_request._body
    else:
        raw = django_request.read(MAX_REQUEST_BYTES + 1)
    if len(raw) > MAX_REQUEST_BYTES:
        raise EnvelopeError(
            f"the body is larger than {MAX_REQUEST_BYTES} bytes", status=413, code="too_large"
        )
    return raw


def read_upload(request: Request) -> tuple[bytes, str, str, Application | None]:
    """(bytes, format, filename, default application) of a multipart upload."""
    upload = request.FILES.get("file")
    if upload is None:
        raise EnvelopeError("send the file in the `file` field")
    if upload.size > MAX_REQUEST_BYTES:
        raise EnvelopeError(
            f"the file is {upload.size} bytes; the limit is {MAX_REQUEST_BYTES}",
            status=413,
            code="too_large",
        )
    ext = upload.name.rsplit(".", 1)[-1].lower() if "." in upload.name else ""
    fmt = FILE_FORMATS.get(ext)
    if fmt is None:
        raise EnvelopeError("the file must end in .csv, .jsonl, .ndjson or .json")
    slug = request.data.get("application") or ""
    app = Application.objects.filter(slug=slug).first() if slug else None
    if slug and app is None:
        raise services.EnvelopeError(f"unknown application {slug!r}")
    return upload.read(), fmt, upload.name, app


def batch_response(batch: IngestBatch, *, created: bool = False) -> Response:
    location = f"/api/v1/ingest-batches/{batch.pk}"
    return Response(
        new_batch_data(batch, location) if created else IngestBatchSerializer(batch).data,
        status=status.HTTP_202_ACCEPTED,
        headers={"Location": location},
    )


_DATETIME = IngestBatchSerializer().fields["created_at"]


def new_batch_data(batch: IngestBatch, url: str) -> dict[str, Any]:
    """IngestBatchSerializer's output for a batch just stored (nothing counted yet), built
    directly: the serializer costs about 1 ms of CPU per ingest request (a test holds them
    equal)."""
    return {
        "id": batch.pk,
        "url": url,
        "state": batch.state,
        "source": batch.source,
        "format": batch.format,
        "filename": batch.filename,
        "created_at": _DATETIME.to_representation(batch.created_at),
        "finished_at": None,
        "attempts": batch.attempts,
        "total": batch.total,
        "accepted": batch.accepted,
        "duplicate": batch.duplicate,
        "rejected": batch.rejected,
        "errors": batch.errors,
    }


class FeedbackIngestView(APIView):
    """`POST /api/v1/feedback/`: one durable write, then the `ingest` queue does the rest."""

    authentication_classes = [BearerTokenAuthentication, SessionAuthentication]
    permission_classes = [FeedbackWrite]
    throttle_classes = [SlidingWindowScopedRateThrottle]
    throttle_scope = "ingest"
    parser_classes = [JSONParser, MultiPartParser]

    @extend_schema(
        operation_id="feedback_ingest",
        summary="Submit feedback events (one, a list of up to 10,000, or a CSV/JSONL file)",
        description=(
            "Answers 202 with `Location: /api/v1/ingest-batches/{id}` once the submission is "
            "stored; the events are checked and counted by a worker. A bad event is rejected "
            "alone (see the batch's `errors`). Bodies may also be sent raw as "
            "`application/x-ndjson` or `text/csv`. An `Idempotency-Key` header makes a retry "
            "return the first response.\n\n" + EVENT_FIELDS
        ),
        # Truthful: the envelope is any JSON object or list; each event is checked later, and
        # a bad one is reported in the batch rather than refusing the request.
        request={
            "application/json": {
                "oneOf": [
                    {"type": "object", "description": "One event."},
                    {"type": "array", "items": {}, "description": "At most 10,000 (413)."},
                ]
            },
            "multipart/form-data": FeedbackUploadInput,
        },
        examples=[OpenApiExample("Two events", value=EXAMPLE_EVENTS, request_only=True)],
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                str,
                OpenApiParameter.HEADER,
                required=False,
                description="Retries with the same key (and body) get the first response.",
            )  # fmt: skip
        ],
        responses={
            202: IngestBatchSerializer,
            400: OpenApiResponse(ERROR, description="Not JSON, not an event or a list, no events."),
            401: OpenApiResponse(ERROR, description="No valid token."),
            403: OpenApiResponse(ERROR, description="Token lacks feedback:write or the role."),
            409: OpenApiResponse(ERROR, description="Idempotency-Key reused with another body."),
            413: OpenApiResponse(ERROR, description="More than 10,000 events or 5 MB."),
            415: OpenApiResponse(ERROR, description="Unsupported content type."),
            429: OpenApiResponse(ERROR, description="Over the ingest rate limit."),
        },
    )
    def post(self, request: Request) -> Response:
        ctype = (request.content_type or "").split(";")[0].strip().lower()
        app = None
        filename = ""
        if ctype == "multipart/form-data":
            raw, fmt, filename, app = read_upload(request)
            source = IngestBatch.Source.UPLOAD
        elif ctype in BODY_FORMATS:
            raw, fmt, source = read_body(request), BODY_FORMATS[ctype], IngestBatch.Source.API
        else:
            raise UnsupportedMediaType(ctype)
        batch, created = services.submit_batch(
            actor=Actor.of(request.user, request.auth),
            raw=raw,
            fmt=fmt,
            source=source,
            filename=filename,
            default_application=app,
            idempotency_key=request.headers.get("Idempotency-Key", "")[:255],
            request_id=getattr(request, "request_id", ""),
        )
        return batch_response(batch, created=created)


@extend_schema(
    responses={
        200: IngestBatchSerializer,
        400: OpenApiResponse(ERROR, description="Invalid filter value."),
        401: OpenApiResponse(ERROR, description="No valid token."),
        403: OpenApiResponse(ERROR, description="Token lacks the read scope."),
        404: OpenApiResponse(ERROR, description="No such batch, or not yours."),
    }
)
class IngestBatchViewSet(mixins.RetrieveModelMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    """Ingest batches: state, counts and per-event errors. Devops see all, others their own."""

    queryset = IngestBatch.objects.none()  # for the schema; the real one depends on the user
    serializer_class = IngestBatchSerializer
    filterset_fields = ["state", "source"]
    ordering_fields = ["created_at", "id"]

    def get_queryset(self) -> Any:
        return selectors.ingest_batch_list(user=self.request.user)


# --- Reports from people ---


class TriageWrite(ScopedPermission):
    """Filing needs feedback:write and devops or product; triage needs devops."""

    write_scope = ApiToken.Scope.FEEDBACK_WRITE
    write_roles = (DEVOPS,)


REPORT_ERRORS = {
    400: OpenApiResponse(ERROR, description="Invalid input (field-level messages)."),
    401: OpenApiResponse(ERROR, description="No valid token."),
    403: OpenApiResponse(ERROR, description="Token lacks the scope, or the user the role."),
    404: OpenApiResponse(ERROR, description="No such report."),
}


@extend_schema_view(
    list=extend_schema(responses={200: FeedbackReportSerializer, **REPORT_ERRORS}),
    retrieve=extend_schema(responses={200: FeedbackReportSerializer, **REPORT_ERRORS}),
)
class FeedbackReportViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    """Problems people reported with a model, and their triage."""

    queryset = FeedbackReport.objects.none()
    serializer_class = FeedbackReportSerializer
    filterset_fields = ["state", "severity", "kind"]
    ordering_fields = ["created_at", "severity"]

    def get_queryset(self) -> Any:
        return selectors.report_list()

    def get_permissions(self) -> list[Any]:
        if self.action == "create":
            return [FeedbackWrite()]
        if self.action in ("acknowledge", "resolve"):
            return [TriageWrite()]
        return super().get_permissions()

    @extend_schema(
        request=FeedbackReportInput,
        responses={201: FeedbackReportSerializer, **REPORT_ERRORS},
    )
    def create(self, request: Request) -> Response:
        body = FeedbackReportInput(data=request.data)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        slug = data.pop("application")
        application = Application.objects.filter(slug=slug).first()
        if application is None:
            raise InvalidInput(f"unknown application {slug!r}", field="application")
        ref = data.pop("model_version", None)
        report = services.file_report(
            actor=Actor.of(request.user, request.auth),
            application=application,
            model_version=resolve_version_ref(ref) if ref else None,
            **data,
        )
        return Response(FeedbackReportSerializer(report).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        request=ReportTransitionInput,
        responses={
            200: FeedbackReportSerializer,
            409: OpenApiResponse(ERROR, description="Not allowed from the current state."),
            **REPORT_ERRORS,
        },
    )
    @action(detail=True, methods=["post"])
    def acknowledge(self, request: Request, pk: str) -> Response:
        return self._transition(request, pk, services.acknowledge_report)

    @extend_schema(
        request=ReportTransitionInput,
        responses={
            200: FeedbackReportSerializer,
            409: OpenApiResponse(ERROR, description="Not allowed from the current state."),
            **REPORT_ERRORS,
        },
    )
    @action(detail=True, methods=["post"])
    def resolve(self, request: Request, pk: str) -> Response:
        return self._transition(request, pk, services.resolve_report)

    def _transition(self, request: Request, pk: str, service: Any) -> Response:
        report = self.get_object()
        body = ReportTransitionInput(data=request.data)
        body.is_valid(raise_exception=True)
        report = service(
            actor=Actor.of(request.user, request.auth),
            report_id=report.pk,
            note=body.validated_data.get("note", ""),
        )
        return Response(FeedbackReportSerializer(report).data)


def resolve_version_ref(ref: str) -> ModelVersion:
    """'<model>:<version>' -> the version, or a field-level 400 (parsed as an event's
    model_version is)."""
    parsed = parse_version_ref(ref, 0, [])
    version = version_by_number(model_name=parsed[0], version=parsed[1]) if parsed else None
    if version is None:
        raise InvalidInput(f"unknown model version {ref!r}", field="model_version")
    return version
