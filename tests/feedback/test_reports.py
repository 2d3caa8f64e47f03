import pytest

from feedback.models import FeedbackReport
from feedback.services import acknowledge_report, file_report, resolve_report
from registry.exceptions import IllegalTransition, PermissionDenied
from registry.models import AuditEvent
from registry.roles import Actor


def test_file_report_prefills_the_version_serving_now(served, product_user):
    app = served.deployment.application

    report = file_report(
        actor=Actor.of(product_user), application=app, kind="bad_recommendation",
        title="Winter coats in July", example_request_ids=["r1", "r2"],
    )  # fmt: skip

    assert report.model_version_id == served.model_version_id
    assert report.state == "open"
    assert AuditEvent.objects.filter(
        kind="feedback_report.filed", target_id=str(report.pk)
    ).exists()


def test_viewer_cannot_file_a_report(served, viewer_user):
    with pytest.raises(PermissionDenied):
        file_report(
            actor=Actor.of(viewer_user), application=served.deployment.application,
            kind="other", title="x",
        )  # fmt: skip

    assert not FeedbackReport.objects.exists()


def test_triage_records_who_and_when(feedback_report_factory, devops_actor):
    report = feedback_report_factory()

    acknowledge_report(actor=devops_actor, report_id=report.pk)
    resolve_report(actor=devops_actor, report_id=report.pk, note="retrained with July data")

    report.refresh_from_db()
    assert report.state == "resolved"
    assert report.acknowledged_by == devops_actor.user
    assert report.resolved_by == devops_actor.user
    assert report.acknowledged_at <= report.resolved_at
    assert report.resolution == "retrained with July data"


def test_resolved_report_cannot_be_acknowledged(feedback_report_factory, devops_actor):
    report = feedback_report_factory(state="resolved")

    with pytest.raises(IllegalTransition):
        acknowledge_report(actor=devops_actor, report_id=report.pk)


def test_product_user_cannot_triage(feedback_report_factory, product_user):
    report = feedback_report_factory()

    with pytest.raises(PermissionDenied):
        acknowledge_report(actor=Actor.of(product_user), report_id=report.pk)

    report.refresh_from_db()
    assert report.state == "open"
