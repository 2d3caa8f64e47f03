"""Reports from people: file one, then triage it open → acknowledged → resolved."""

from __future__ import annotations

from collections.abc import Sequence

from django.db import transaction
from django.utils import timezone

from registry.exceptions import IllegalTransition, PermissionDenied
from registry.models import Application, ModelVersion, TrafficAllocation
from registry.roles import Actor, can_file_feedback
from registry.services import record_audit_event

from ..models import FeedbackReport

State = FeedbackReport.State


def serving_version(application: Application) -> ModelVersion | None:
    """The version taking most live traffic of the application now (production first)."""
    rows = (
        TrafficAllocation.objects.filter(deployment__application=application, valid_to__isnull=True)
        .exclude(role=TrafficAllocation.Role.SHADOW)
        .select_related("model_version__registered_model")
        .order_by("-weight", "model_version_id")
    )
    first = rows.filter(deployment__environment="production").first() or rows.first()
    return first.model_version if first else None


def _snapshot(report: FeedbackReport) -> dict:
    return {"state": report.state, "severity": report.severity, "kind": report.kind}


@transaction.atomic
def file_report(
    *,
    actor: Actor,
    application: Application,
    kind: str,
    title: str,
    severity: str = FeedbackReport.Severity.MEDIUM,
    description: str = "",
    example_request_ids: Sequence[str] = (),
    model_version: ModelVersion | None = None,
) -> FeedbackReport:
    """Record a problem someone saw with a model; the version defaults to what serves now."""
    if actor.user is not None and not can_file_feedback(actor.user):
        raise PermissionDenied("only devops and product roles file reports")
    report = FeedbackReport.objects.create(
        application=application,
        model_version=model_version or serving_version(application),
        kind=kind,
        severity=severity,
        title=title,
        description=description,
        example_request_ids=[str(r) for r in example_request_ids],
        reported_by=actor.user,
    )
    record_audit_event(
        actor=actor, kind="feedback_report.filed", target=report, application=application,
        after=_snapshot(report),
    )  # fmt: skip
    return report


def _transition(*, actor: Actor, report_id: int, to: str, allowed: Sequence[str], note: str):
    if not actor.is_devops:
        raise PermissionDenied("only the devops role triages reports")
    report = FeedbackReport.objects.select_for_update().get(pk=report_id)
    if report.state not in allowed:
        raise IllegalTransition(f"a {report.state} report cannot become {to}", field="state")
    before = _snapshot(report)
    now = timezone.now()
    report.state = to
    if to == State.ACKNOWLEDGED:
        report.acknowledged_by, report.acknowledged_at = actor.user, now
    else:
        report.resolved_by, report.resolved_at = actor.user, now
        report.resolution = note
    report.save()
    record_audit_event(
        actor=actor, kind=f"feedback_report.{to}", target=report,
        application=report.application, reason=note, before=before, after=_snapshot(report),
    )  # fmt: skip
    return report


@transaction.atomic
def acknowledge_report(*, actor: Actor, report_id: int, note: str = "") -> FeedbackReport:
    """open → acknowledged: someone is looking at it."""
    return _transition(
        actor=actor, report_id=report_id, to=State.ACKNOWLEDGED, allowed=[State.OPEN], note=note
    )


@transaction.atomic
def resolve_report(*, actor: Actor, report_id: int, note: str = "") -> FeedbackReport:
    """open | acknowledged → resolved, with what was done."""
    return _transition(
        actor=actor, report_id=report_id, to=State.RESOLVED,
        allowed=[State.OPEN, State.ACKNOWLEDGED], note=note,
    )  # fmt: skip
