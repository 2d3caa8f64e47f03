"""GET /api/v1/rollouts/{id}/analysis: the rollout's statistics, read from hourly rollups.

Routed from feedback.api.urls, which dashboard/urls.py includes before the registry API, so
this path wins over the registry router's rollout routes.
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from registry.api.serializers import error_responses
from registry.exceptions import NotFound
from registry.rollout_selectors import rollout_list

from ..analysis import DEFAULT_POWER_EFFECT, analyse_rollout


class AnalysisQuery(serializers.Serializer):
    effect = serializers.FloatField(
        required=False, min_value=0.001, max_value=10, default=DEFAULT_POWER_EFFECT
    )


class RolloutAnalysisView(APIView):
    """Per-arm rates and intervals, difference, p-values, SRM, power and guardrail verdicts."""

    @extend_schema(
        tags=["rollouts"],
        summary="Statistical analysis of a rollout",
        description=(
            "From hourly rollups since the rollout started. Per arm: n, rate and 95 % Wilson "
            "interval; absolute and relative difference with intervals; two-sided p-values "
            "(two-proportion z-test for rates, Welch's t-test for conversion value); an "
            "always-valid mSPRT p-value that is safe to read after every look; Holm-adjusted "
            "p-values across metrics; a sample-ratio-mismatch chi-square test of the current "
            "step (flagged at p < 0.001, judged from 8 exposures per arm); power; guardrail "
            "verdicts pass / fail / not_enough_data. Missing figures are null, never NaN."
        ),
        parameters=[
            OpenApiParameter("id", OpenApiTypes.INT, OpenApiParameter.PATH),
            OpenApiParameter(
                "effect",
                OpenApiTypes.FLOAT,
                description="Relative lift the power estimate is quoted for (default 0.05).",
            ),
        ],
        responses={200: OpenApiTypes.OBJECT, **error_responses(400, 401, 403, 404)},
    )
    def get(self, request: Request, pk: int) -> Response:
        query = AnalysisQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        rollout = rollout_list().filter(pk=pk).first() if pk <= 2**63 - 1 else None
        if rollout is None:
            raise NotFound(f"no rollout {pk}")
        return Response(analyse_rollout(rollout, effect=query.validated_data["effect"]))
