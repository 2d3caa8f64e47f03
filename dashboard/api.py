"""The status API: what serves an application right now, for pipelines, sidecars and pages.

Responses carry a weak ETag over everything except the clock-driven `age_seconds` figures,
so a client polling with If-None-Match gets 304 until something really changes (a new
allocation, a replica going stale, a rollout step, an SLO breach) and recomputes ages from
`trained_at` in between. The per-application body is cached (dashboard.status_cache) under
a generation that every write affecting it bumps, and only until the first instant at which
time alone changes it, so a change is visible on the next request. The fleet endpoint serves
the same entries, read together.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

from django.http import HttpResponse
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from registry import status_generation
from registry.api.serializers import error_responses
from registry.permissions import ReadScope
from registry.services import tokens

from . import selectors, status_cache

# --- Serializers: the documented response shape ---


class ServingVersionSerializer(serializers.Serializer):
    model = serializers.CharField()
    version = serializers.IntegerField()
    role = serializers.CharField(help_text="control, treatment, canary or shadow")
    weight = serializers.IntegerField(help_text="Percent of live traffic (0 for shadow).")
    sha256 = serializers.CharField()
    trained_at = serializers.DateTimeField()
    age_seconds = serializers.IntegerField(help_text="Now minus trained_at.")
    slo_breached = serializers.BooleanField(help_text="age_seconds > max_model_age_s")
    offline_accuracy = serializers.FloatField(allow_null=True)
    online_accuracy = serializers.FloatField(
        allow_null=True, help_text="From feedback; null until labelled feedback exists."
    )


class ReplicaCountsSerializer(serializers.Serializer):
    expected = serializers.IntegerField(help_text="Desired replicas.")
    reporting = serializers.IntegerField(help_text="Heartbeat within the deployment's timeout.")
    stale = serializers.IntegerField(help_text="Known replicas whose heartbeat is too old.")
    mismatched = serializers.IntegerField(
        help_text="Reporting replicas whose sha256 matches no allocated version."
    )
    inconsistent = serializers.IntegerField(
        help_text="Reporting replicas whose last golden-input probe was divergent or mismatched."
    )
    last_check_at = serializers.DateTimeField(
        allow_null=True, help_text="Start of the latest consistency check (probe run)."
    )
    last_check_outcome = serializers.CharField(
        help_text="consistent, inconsistent, incomplete or skipped; empty if never probed."
    )


class VersionRefSerializer(serializers.Serializer):
    model = serializers.CharField()
    version = serializers.IntegerField()


class RolloutStatusSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    state = serializers.CharField()
    strategy = serializers.CharField()
    step_index = serializers.IntegerField(help_text="0-based index into the rollout's steps.")
    step_count = serializers.IntegerField()
    percent = serializers.IntegerField(allow_null=True, help_text="Candidate traffic share.")
    baseline = VersionRefSerializer()
    candidate = VersionRefSerializer()
    started_at = serializers.DateTimeField(allow_null=True)


class FiringAlertSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    severity = serializers.CharField()
    message = serializers.CharField()
    deployment = serializers.CharField(allow_null=True)
    since = serializers.DateTimeField()


class DeploymentStatusSerializer(serializers.Serializer):
    name = serializers.CharField()
    environment = serializers.CharField()
    endpoint_url = serializers.CharField()
    versions = ServingVersionSerializer(many=True)
    replicas = ReplicaCountsSerializer()
    active_rollout = RolloutStatusSerializer(allow_null=True)


class ApplicationSummarySerializer(serializers.Serializer):
    slug = serializers.CharField()
    name = serializers.CharField()
    team = serializers.CharField()
    criticality = serializers.CharField()
    max_model_age_s = serializers.IntegerField(help_text="The age SLO in seconds.")


class ApplicationStatusSerializer(serializers.Serializer):
    """What serves one application now; the contract CI/CD and sidecars rely on."""

    application = ApplicationSummarySerializer(source="*")
    deployments = DeploymentStatusSerializer(many=True)
    firing_alerts = FiringAlertSerializer(many=True)


class FleetStatusSerializer(serializers.Serializer):
    applications = ApplicationStatusSerializer(many=True)


# --- Payload: built straight from the selector's dataclasses; the serializers document it ---
#
# DRF serializers cost ~1 ms per application here (500 applications: 0.4 s); these plain
# builders produce the same JSON, and the schema fuzz test checks they still match the schema.


def _rollout_payload(r: selectors.RolloutStatus | None) -> dict[str, Any] | None:
    if r is None:
        return None
    return {
        "id": r.id,
        "state": r.state,
        "strategy": r.strategy,
        "step_index": r.step_index,
        "step_count": r.step_count,
        "percent": r.percent,
        "baseline": {"model": r.baseline.model, "version": r.baseline.version},
        "candidate": {"model": r.candidate.model, "version": r.candidate.version},
        "started_at": r.started_at,
    }


def _application_payload(
    s: selectors.ApplicationStatus, clock: list[tuple[dict[str, Any], int]]
) -> dict[str, Any]:
    """One application's body; age_seconds is left null and recorded in `clock` to fill later."""
    deployments = []
    for d in s.deployments:
        versions = []
        for v in d.versions:
            row = {
                "model": v.model,
                "version": v.version,
                "role": v.role,
                "weight": v.weight,
                "sha256": v.sha256,
                "trained_at": v.trained_at,
                "age_seconds": None,
                "slo_breached": v.slo_breached,
                "offline_accuracy": v.offline_accuracy,
                "online_accuracy": v.online_accuracy,
            }
            clock.append((row, v.age_seconds))
            versions.append(row)
        deployments.append(
            {
                "name": d.name,
                "environment": d.environment,
                "endpoint_url": d.endpoint_url,
                "versions": versions,
                "replicas": dict(vars(d.replicas)),
                "active_rollout": _rollout_payload(d.active_rollout),
            }
        )
    return {
        "application": {
            "slug": s.slug,
            "name": s.name,
            "team": s.team,
            "criticality": s.criticality,
            "max_model_age_s": s.max_model_age_s,
        },
        "deployments": deployments,
        "firing_alerts": [dict(vars(a)) for a in s.firing_alerts],
    }


# --- ETag ---


def _matches(if_none_match: str, etag: str) -> bool:
    """Weak comparison (RFC 9110 13.1.2) against a list of entity tags, or '*'."""
    if if_none_match.strip() == "*":
        return True
    wanted = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == wanted for tag in if_none_match.split(","))


def _headers(etag: str) -> dict[str, str]:
    return {"ETag": etag, "Cache-Control": "private, no-cache", "Vary": "Authorization, Cookie"}


def entry_response(request: Request, entry: status_cache.Entry) -> HttpResponse:
    """A cached status as 304, or as its JSON body with the ages of this instant."""
    return _conditional(request, entry.etag, entry.body)


def fleet_response(request: Request, entries: list[status_cache.Entry]) -> HttpResponse:
    """The fleet's status from its applications' entries: 304 when the client holds the same
    entries (the ETag hashes theirs, in order), else their bodies in one JSON list."""
    digest = hashlib.sha256("\n".join(e.etag for e in entries).encode()).hexdigest()[:32]

    def body() -> bytes:
        now = time.time()  # one instant for every age in the answer
        return b'{"applications":[' + b",".join(e.body(now) for e in entries) + b"]}"

    return _conditional(request, f'W/"{digest}"', body)


def _conditional(request: Request, etag: str, body: Callable[[], bytes]) -> HttpResponse:
    """304 when the client holds `etag`, else the JSON `body()` (built only then).

    Plain JSON goes out as the bytes; another negotiated rendering (the browsable API, an
    indented JSON) gets the same data through DRF.
    """
    headers = _headers(etag)
    if _matches(request.headers.get("If-None-Match", ""), etag):
        return Response(status=304, headers=headers)
    data = body()
    renderer = getattr(request, "accepted_renderer", None)
    if type(renderer) is JSONRenderer and request.accepted_media_type == renderer.media_type:
        return HttpResponse(data, content_type=renderer.media_type, headers=headers)
    return Response(json.loads(data), headers=headers)


# --- Views ---

_ETAG_HEADER = OpenApiParameter(
    "If-None-Match",
    str,
    OpenApiParameter.HEADER,
    required=False,
    description="An ETag from an earlier response; 304 when nothing but the clock moved.",
)
_NOT_MODIFIED = {304: OpenApiResponse(description="Not modified: the ETag still matches.")}


class ApplicationStatusView(APIView):
    """Status of one application."""

    permission_classes = [ReadScope]

    def dispatch(self, request: Any, *args: Any, **kwargs: Any) -> HttpResponse:
        # the token and the status entry (with its generation) in one cache round trip
        keys = tokens.prefetch_keys(request.META.get("HTTP_AUTHORIZATION", ""))
        keys += status_cache.prefetch_keys(kwargs.get("slug", ""))
        with status_generation.prefetched(keys):
            return super().dispatch(request, *args, **kwargs)

    @extend_schema(
        operation_id="application_status",
        summary="What serves this application now",
        description=(
            "Every serving model version per deployment (role, weight, age against the "
            "application's SLO, offline and online accuracy), replica consistency counts, the "
            "active rollout and firing alerts. Send If-None-Match with the last ETag to get "
            "304 until something other than the clock changes."
        ),
        tags=["status"],
        parameters=[_ETAG_HEADER],
        responses={
            200: ApplicationStatusSerializer,
            **_NOT_MODIFIED,
            **error_responses(401, 403, 404),
        },
    )
    def get(self, request: Request, slug: str) -> HttpResponse:
        return entry_response(request, status_cache.application_entry(slug, _application_payload))


class FleetStatusView(APIView):
    """Status of every application at once."""

    permission_classes = [ReadScope]

    @extend_schema(
        operation_id="fleet_status",
        summary="What serves every application now",
        description=(
            "The per-application status of every application, ordered by slug: the same "
            "entries as the per-application endpoint, from the same cache, each as fresh. "
            "Send If-None-Match with the last ETag to get 304 until an application changes."
        ),
        tags=["status"],
        parameters=[_ETAG_HEADER],
        responses={200: FleetStatusSerializer, **_NOT_MODIFIED, **error_responses(401, 403)},
    )
    def get(self, request: Request) -> HttpResponse:
        return fleet_response(request, status_cache.fleet_entries(_application_payload))
