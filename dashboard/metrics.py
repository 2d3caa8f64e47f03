"""`/metrics`: the fleet's figures in Prometheus text format.

Every figure is read from PostgreSQL at scrape time by one custom collector (through the same
selectors as the status API), so any gunicorn worker answers the same numbers and no
multiprocess directory is needed: counters such as events ingested are sums of durable rows,
not per-process memory. The rendered text is cached for METRICS_CACHE_S in the shared cache so
several Prometheus servers (or a fast scrape interval) cost one computation per interval.

Access: a bearer token with scope `read`, or a client address in METRICS_ALLOWED_IPS
(addresses or networks, default loopback). Anything else gets 401 (no or bad token) or 403
(a token without the read scope).
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.core.cache import cache
from django.db.models import Count, Min, Sum
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from rest_framework.exceptions import AuthenticationFailed

from feedback.models import Alert, AlertRule, IngestBatch
from feedback.selectors import quality_by_version
from registry.auth import BearerTokenAuthentication
from registry.models import ApiToken, Rollout

from . import selectors
from .models import WebhookDelivery

CACHE_KEY = "dashboard:metrics:v1"
VERSION_LABELS = ["application", "deployment", "model", "version", "role"]
DEPLOYMENT_LABELS = ["application", "deployment"]


# --- Reads that only the exporter needs (one query each) ---


@dataclass(frozen=True)
class IngestBacklog:
    pending: int
    processing: int
    oldest_pending_at: datetime | None


def ingest_backlog() -> IngestBacklog:
    """Batches waiting for or inside a worker, and when the oldest waiting one arrived."""
    rows = {
        r["state"]: r
        for r in IngestBatch.objects.filter(
            state__in=[IngestBatch.State.PENDING, IngestBatch.State.PROCESSING]
        )
        .values("state")
        .annotate(n=Count("id"), oldest=Min("created_at"))
        .order_by()
    }
    pending = rows.get(IngestBatch.State.PENDING, {})
    return IngestBacklog(
        pending=pending.get("n", 0),
        processing=rows.get(IngestBatch.State.PROCESSING, {}).get("n", 0),
        oldest_pending_at=pending.get("oldest"),
    )


def ingest_outcomes() -> dict[str, dict[str, int]]:
    """Events per ingest source and outcome (accepted / duplicate / rejected), all time."""
    rows = (
        IngestBatch.objects.values("source")
        .annotate(accepted=Sum("accepted"), duplicate=Sum("duplicate"), rejected=Sum("rejected"))
        .order_by()
    )
    return {
        r["source"]: {k: int(r[k] or 0) for k in ("accepted", "duplicate", "rejected")}
        for r in rows
    }


def firing_alerts_by_severity() -> dict[str, int]:
    """Every severity, zero when nothing of it fires (so alerting on the series is simple)."""
    counts = dict.fromkeys(AlertRule.Severity.values, 0)
    for row in (
        Alert.objects.filter(state=Alert.State.FIRING)
        .values("severity")
        .annotate(n=Count("id"))
        .order_by()
    ):
        counts[row["severity"]] = row["n"]
    return counts


def webhook_backlog() -> dict[str, int]:
    """Pending and failed webhook deliveries (delivered ones are history, not a backlog)."""
    counts = {WebhookDelivery.State.PENDING.value: 0, WebhookDelivery.State.FAILED.value: 0}
    for row in (
        WebhookDelivery.objects.filter(state__in=list(counts))
        .values("state")
        .annotate(n=Count("id"))
        .order_by()
    ):
        counts[row["state"]] = row["n"]
    return counts


# --- The collector ---


def _gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels)


class FleetCollector:
    """Yields every modelops_* family from the database (see the module docstring)."""

    def collect(self) -> Iterator[Metric]:
        now = timezone.now()
        fleet = selectors.fleet_status()
        quality = quality_by_version({(a.id, v.version_id) for a in fleet for v in a.versions})

        age = _gauge(
            "modelops_model_age_seconds",
            "Age of a serving version (since trained_at).",
            VERSION_LABELS,
        )
        slo = _gauge(
            "modelops_model_age_slo_seconds",
            "Maximum model age of the application.",
            ["application"],
        )
        weight = _gauge(
            "modelops_traffic_weight_percent",
            "Live traffic share of a serving version.",
            VERSION_LABELS,
        )
        offline = _gauge(
            "modelops_offline_accuracy",
            "Offline accuracy registered with the version.",
            VERSION_LABELS,
        )
        online = _gauge(
            "modelops_online_accuracy",
            "Correct / labelled feedback over the online window.",
            VERSION_LABELS,
        )
        conversion = _gauge(
            "modelops_conversion_rate",
            "Conversions / impressions over the online window.",
            VERSION_LABELS,
        )
        bad = _gauge(
            "modelops_bad_recommendation_rate",
            "Bad-recommendation reports / impressions over the online window.",
            VERSION_LABELS,
        )
        replicas = {
            kind: _gauge(f"modelops_replicas_{kind}", doc, DEPLOYMENT_LABELS)
            for kind, doc in (
                ("expected", "Desired replicas of the deployment."),
                ("reporting", "Replicas with a heartbeat within the timeout."),
                ("mismatched", "Reporting replicas serving an artifact that is not allocated."),
                ("stale", "Known replicas without a recent heartbeat."),
                ("inconsistent", "Reporting replicas the last golden-input probe found bad."),
            )
        }
        rollout_state = _gauge(
            "modelops_rollout_state",
            "1 for the state of each active rollout.",
            [*DEPLOYMENT_LABELS, "rollout", "state"],
        )
        rollout_step = _gauge(
            "modelops_rollout_step",
            "Current step index (0-based) of an active rollout.",
            [*DEPLOYMENT_LABELS, "rollout"],
        )
        rollout_steps = _gauge(
            "modelops_rollout_steps",
            "Number of steps of an active rollout.",
            [*DEPLOYMENT_LABELS, "rollout"],
        )
        rollout_percent = _gauge(
            "modelops_rollout_candidate_percent",
            "Traffic percent of an active rollout's candidate.",
            [*DEPLOYMENT_LABELS, "rollout"],
        )

        for app in fleet:
            slo.add_metric([app.slug], app.max_model_age_s)
            for d in app.deployments:
                for v in d.versions:
                    labels = [app.slug, d.name, v.model, str(v.version), v.role]
                    age.add_metric(labels, v.age_seconds)
                    weight.add_metric(labels, v.weight)
                    if v.offline_accuracy is not None:
                        offline.add_metric(labels, v.offline_accuracy)
                    q = quality.get((app.id, v.version_id))
                    if q is None:
                        continue
                    for family, value in (
                        (online, q.online_accuracy.value),
                        (conversion, q.conversion_rate.value),
                        (bad, q.bad_recommendation_rate.value),
                    ):
                        if value is not None:
                            family.add_metric(labels, value)
                dep = [app.slug, d.name]
                for kind, family in replicas.items():
                    family.add_metric(dep, getattr(d.replicas, kind))
                r = d.active_rollout
                if r is not None:
                    for state in (Rollout.State.RUNNING, Rollout.State.PAUSED):
                        rollout_state.add_metric([*dep, str(r.id), state], int(r.state == state))
                    rollout_step.add_metric([*dep, str(r.id)], r.step_index)
                    rollout_steps.add_metric([*dep, str(r.id)], r.step_count)
                    if r.percent is not None:
                        rollout_percent.add_metric([*dep, str(r.id)], r.percent)
        yield from (age, slo, weight, offline, online, conversion, bad, *replicas.values())
        yield from (rollout_state, rollout_step, rollout_steps, rollout_percent)

        alerts = _gauge("modelops_alerts_firing", "Alerts firing now, by severity.", ["severity"])
        for severity, n in firing_alerts_by_severity().items():
            alerts.add_metric([severity], n)
        yield alerts

        backlog = ingest_backlog()
        batches = _gauge("modelops_ingest_batches", "Ingest batches not finished yet.", ["state"])
        batches.add_metric(["pending"], backlog.pending)
        batches.add_metric(["processing"], backlog.processing)
        yield batches
        oldest = GaugeMetricFamily(
            "modelops_ingest_oldest_pending_age_seconds",
            "Age of the oldest batch waiting for a worker (0 when none waits).",
        )
        waited = (
            (now - backlog.oldest_pending_at).total_seconds() if backlog.oldest_pending_at else 0
        )
        oldest.add_metric([], max(waited, 0.0))
        yield oldest

        events = CounterMetricFamily(
            "modelops_feedback_events",
            "Feedback events processed by ingest, by source and outcome.",
            labels=["source", "outcome"],
        )
        for source, outcomes in sorted(ingest_outcomes().items()):
            for outcome, n in outcomes.items():
                events.add_metric([source, outcome], n)
        yield events

        hooks = _gauge(
            "modelops_webhook_deliveries",
            "Outbound webhook deliveries waiting for an attempt or given up.",
            ["state"],
        )
        for state, n in webhook_backlog().items():
            hooks.add_metric([state], n)
        yield hooks

        scrape = GaugeMetricFamily(
            "modelops_metrics_generated_timestamp_seconds",
            "When these figures were read from the database (they are cached briefly).",
        )
        scrape.add_metric([], time.time())
        yield scrape


def render_metrics() -> bytes:
    """The exposition text, from the shared cache when a fresh one exists."""
    ttl = settings.METRICS_CACHE_S
    if ttl > 0:
        cached = cache.get(CACHE_KEY)
        if cached is not None:
            return cached
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector())
    text = generate_latest(registry)
    if ttl > 0:
        cache.set(CACHE_KEY, text, ttl)
    return text


# --- Access ---


def _address_allowed(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    for entry in settings.METRICS_ALLOWED_IPS:
        try:
            if ip in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


def _denied(status: int, message: str) -> HttpResponse:
    response = HttpResponse(message + "\n", status=status, content_type="text/plain")
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
    return response


@never_cache
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus exposition; a bearer token (scope read) or an allowed address."""
    try:
        result = BearerTokenAuthentication().authenticate(request)  # type: ignore[arg-type]
    except AuthenticationFailed as exc:
        return _denied(401, str(exc.detail))
    if result is not None:
        token: ApiToken = result[1]
        if ApiToken.Scope.READ not in token.scopes:
            return _denied(403, "the token lacks the read scope")
    elif not _address_allowed(request.META.get("REMOTE_ADDR", "")):
        return _denied(401, "send a bearer token with the read scope")
    return HttpResponse(render_metrics(), content_type=CONTENT_TYPE_LATEST)
