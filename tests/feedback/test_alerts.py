import hashlib
import hmac
import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core import mail
from django.utils import timezone

from feedback.alert_evaluation import evaluate_alert_rules
from feedback.models import Alert, AlertRule, Notification, NotificationAttempt, NotificationChannel
from feedback.services.alerts import ensure_builtin_rules, raise_alert, resolve_alert
from feedback.services.notifications import MAX_ATTEMPTS, deliver_notification
from registry.models import TrafficAllocation
from tests.feedback.rollout_helpers import hour_ago, rollup

SECRET = "s3cret-for-tests"


class Receiver:
    """A webhook receiver on 127.0.0.1 that records requests and answers scripted statuses."""

    def __init__(self):
        self.requests = []
        self.statuses = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((dict(self.headers), body))
                self.send_response(receiver.statuses.pop(0) if receiver.statuses else 204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def webhook(receiver):
    return NotificationChannel.objects.create(
        name="ops-hook", kind="webhook", target=receiver.url, secret=SECRET, min_severity="info"
    )


@pytest.fixture
def stale_version(traffic_allocation_factory):
    """A live version trained 30 h ago for an application whose age SLO is 24 h."""
    row = traffic_allocation_factory()
    row.model_version.trained_at = timezone.now() - timedelta(hours=30)
    row.model_version.save()
    return row


def rule(key):
    ensure_builtin_rules()
    return AlertRule.objects.get(key=key)


def deliver_all(now=None):
    for pk in Notification.objects.filter(state="pending").values_list("pk", flat=True):
        deliver_notification(notification_id=pk, now=now)


def verify(headers, body):
    expected = hmac.new(
        SECRET.encode(), headers["X-Modelops-Timestamp"].encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest(headers["X-Modelops-Signature"], f"sha256={expected}")


def test_alert_fires_notifies_a_signed_webhook_and_resolves(stale_version, webhook, receiver):
    # given a version past its application's age SLO
    # when the rules are evaluated and notifications delivered
    evaluate_alert_rules()
    deliver_all()

    # then one alert fires and the receiver got a validly signed POST about it
    alert = Alert.objects.get(rule__key="model-age-slo")
    assert alert.state == "firing"
    assert alert.application == stale_version.deployment.application
    assert alert.evidence["slo_s"] == 24 * 3600
    [(headers, body)] = receiver.requests
    assert verify(headers, body)
    assert headers["X-Modelops-Event"] == "alert.firing"
    assert json.loads(body)["alert"]["id"] == alert.pk
    assert headers["X-Modelops-Delivery"] == str(alert.notifications.get().delivery_id)

    # when a fresh version replaces it
    stale_version.model_version.trained_at = timezone.now()
    stale_version.model_version.save()
    evaluate_alert_rules()
    deliver_all()

    # then the alert resolves and the receiver hears about it, signed too
    alert.refresh_from_db()
    assert alert.state == "resolved"
    assert alert.resolved_at is not None
    headers, body = receiver.requests[1]
    assert verify(headers, body)
    assert json.loads(body)["event"] == "alert.resolved"


def test_tampered_body_fails_signature_check(stale_version, webhook, receiver):
    evaluate_alert_rules()
    deliver_all()

    headers, body = receiver.requests[0]

    assert not verify(headers, body.replace(b"firing", b"resolved"))


def test_re_evaluation_deduplicates_alerts_and_notifications(stale_version, webhook, receiver):
    evaluate_alert_rules()
    deliver_all()

    evaluate_alert_rules()
    deliver_all()

    assert Alert.objects.filter(rule__key="model-age-slo").count() == 1
    assert Notification.objects.count() == 1
    assert len(receiver.requests) == 1


def test_raise_alert_twice_keeps_one_open_alert_with_fresh_evidence(application):
    first = raise_alert(
        rule_key="replica-probe-mismatch",
        target_key="deployment:1",
        summary="2 replicas disagree",
        evidence={"n": 2},
        application=application,
    )

    second = raise_alert(
        rule_key="replica-probe-mismatch",
        target_key="deployment:1",
        summary="3 replicas disagree",
        evidence={"n": 3},
        application=application,
    )

    assert first.pk == second.pk
    first.refresh_from_db()
    assert first.evidence == {"n": 3}
    assert Alert.objects.filter(state="firing").count() == 1


def test_resolve_alert_then_raise_opens_a_new_alert(application):
    raise_alert(rule_key="replica-probe-mismatch", target_key="d:1", summary="x")
    resolved = resolve_alert(rule_key="replica-probe-mismatch", target_key="d:1", reason="ok")

    again = raise_alert(rule_key="replica-probe-mismatch", target_key="d:1", summary="x")

    assert resolved.state == "resolved"
    assert again.pk != resolved.pk
    assert resolve_alert(rule_key="replica-probe-mismatch", target_key="nope") is None


def test_external_rule_alerts_are_left_to_their_detector(application):
    raise_alert(rule_key="replica-probe-mismatch", target_key="deployment:9", summary="x")

    evaluate_alert_rules()

    assert Alert.objects.get(rule__key="replica-probe-mismatch").state == "firing"


def test_failed_webhook_is_retried_with_backoff_and_every_attempt_recorded(
    stale_version, webhook, receiver
):
    receiver.statuses = [500]
    evaluate_alert_rules()
    n = Notification.objects.get()
    start = timezone.now()

    first = deliver_notification(notification_id=n.pk, now=start)
    too_early = deliver_notification(notification_id=n.pk, now=start + timedelta(seconds=5))
    second = deliver_notification(notification_id=n.pk, now=start + timedelta(seconds=11))

    assert first.state == "pending"
    assert first.next_attempt_at == start + timedelta(seconds=10)
    assert too_early.attempts == 1
    assert second.state == "delivered"
    attempts = list(NotificationAttempt.objects.filter(notification=n).order_by("number"))
    assert [(a.number, a.ok, a.status_code) for a in attempts] == [(1, False, 500), (2, True, 204)]
    assert len(receiver.requests) == 2
    assert (
        receiver.requests[0][0]["X-Modelops-Delivery"]
        == receiver.requests[1][0]["X-Modelops-Delivery"]
    )


def test_webhook_gives_up_after_max_attempts(stale_version, webhook, receiver):
    receiver.statuses = [503] * MAX_ATTEMPTS
    evaluate_alert_rules()
    n = Notification.objects.get()
    at = timezone.now()

    for _ in range(MAX_ATTEMPTS + 1):
        n = deliver_notification(notification_id=n.pk, now=at)
        at += timedelta(hours=1)

    assert n.state == "failed"
    assert n.attempts == MAX_ATTEMPTS
    assert NotificationAttempt.objects.filter(notification=n).count() == MAX_ATTEMPTS


def test_unreachable_webhook_records_the_error(stale_version):
    NotificationChannel.objects.create(
        name="dead", kind="webhook", target="http://127.0.0.1:9/hook", secret="x"
    )
    evaluate_alert_rules()

    n = deliver_notification(notification_id=Notification.objects.get().pk)

    assert n.state == "pending"
    assert n.attempt_log.get().error


def test_email_channel_sends_through_django_mail(stale_version):
    NotificationChannel.objects.create(name="oncall", kind="email", target="oncall@example.com")
    evaluate_alert_rules()

    deliver_all()

    [message] = mail.outbox
    assert message.to == ["oncall@example.com"]
    assert message.subject.startswith("[CRITICAL] Model older than")


def test_channel_severity_filter_skips_lesser_alerts(stale_version):
    NotificationChannel.objects.create(
        name="pager", kind="email", target="pager@example.com", min_severity="critical"
    )
    rule("model-age-slo")
    AlertRule.objects.filter(key="model-age-slo").update(severity="info")

    evaluate_alert_rules()

    assert Alert.objects.filter(state="firing").exists()
    assert not Notification.objects.exists()


# --- Rate rules ---


def live(traffic_allocation_factory, deployment, version, weight, role):
    return traffic_allocation_factory(
        deployment=deployment, model_version=version, weight=weight, role=role
    )


def test_conversion_drop_vs_control_arm_fires_on_a_significant_drop(
    deployment, model_version_factory, traffic_allocation_factory
):
    control, canary = model_version_factory.create_batch(2)
    live(traffic_allocation_factory, deployment, control, 90, "control")
    live(traffic_allocation_factory, deployment, canary, 10, "canary")
    app = deployment.application
    for version, impressions, conversions in ((control, 9000, 900), (canary, 1500, 90)):
        rollup(app, version, "impression", hour_ago(2), impressions)
        rollup(app, version, "conversion", hour_ago(2), conversions)

    evaluate_alert_rules(rules=[rule("conversion-drop-vs-control")])

    alert = Alert.objects.get()
    assert alert.model_version == canary
    assert alert.evidence["relative_degradation"] == pytest.approx(0.4)
    assert alert.evidence["p_value"] < 0.05


def test_rate_rule_without_enough_sample_leaves_alerts_alone(
    deployment, model_version_factory, traffic_allocation_factory
):
    control, canary = model_version_factory.create_batch(2)
    live(traffic_allocation_factory, deployment, control, 90, "control")
    live(traffic_allocation_factory, deployment, canary, 10, "canary")
    rollup(deployment.application, canary, "impression", hour_ago(1), 50)

    result = evaluate_alert_rules(rules=[rule("conversion-drop-vs-control")])

    assert result.not_enough_data == 1
    assert not Alert.objects.exists()


def test_accuracy_drop_vs_previous_version_fires(
    deployment, model_version_factory, traffic_allocation_factory
):
    old, new = model_version_factory.create_batch(2)
    switched = timezone.now() - timedelta(hours=30)
    traffic_allocation_factory(
        deployment=deployment,
        model_version=old,
        valid_from=switched - timedelta(days=3),
        valid_to=switched,
    )
    traffic_allocation_factory(deployment=deployment, model_version=new, valid_from=switched)
    app = deployment.application
    rollup(app, old, "label", switched - timedelta(hours=5), 1000, correct=900, labelled=1000)
    rollup(app, new, "label", hour_ago(3), 1000, correct=800, labelled=1000)

    evaluate_alert_rules(rules=[rule("accuracy-drop")])

    alert = Alert.objects.get()
    assert alert.model_version == new
    assert alert.evidence["reference_rate"] == pytest.approx(0.9)
    assert alert.value == pytest.approx(0.8)


def test_replica_mismatch_fires_for_a_replica_serving_another_artifact(
    traffic_allocation_factory, replica_factory
):
    row = traffic_allocation_factory()
    replica_factory(deployment=row.deployment, reported_sha256=row.model_version.sha256)
    replica_factory(deployment=row.deployment, instance_id="pod-odd", reported_sha256="ab" * 32)

    evaluate_alert_rules(rules=[rule("replica-mismatch")])

    alert = Alert.objects.get()
    assert alert.deployment == row.deployment
    assert alert.value == 1.0
    assert alert.evidence["replicas"] == [f"pod-odd={'ab' * 6}"]


def test_alert_of_a_target_that_stopped_serving_resolves(stale_version):
    evaluate_alert_rules()
    TrafficAllocation.objects.filter(pk=stale_version.pk).update(valid_to=timezone.now())

    evaluate_alert_rules()

    alert = Alert.objects.get(rule__key="model-age-slo")
    assert alert.state == "resolved"
    assert alert.resolution == "target no longer serves"


def test_evaluate_alert_rules_task_runs_the_service(stale_version):
    from feedback.alert_tasks import evaluate_alert_rules_task

    evaluate_alert_rules_task.apply()

    assert Alert.objects.filter(rule__key="model-age-slo", state="firing").count() == 1


def test_alert_on_a_rollout_candidate_pauses_the_rollout(deployment, model_version_factory):
    from registry.models import AuditEvent, Rollout
    from tests.feedback.rollout_helpers import started_rollout, traffic

    base = model_version_factory()
    cand = model_version_factory(registered_model=base.registered_model)
    rollout = started_rollout(deployment, base, cand, strategy="canary", steps=[{"percent": 10}])
    traffic(rollout, hours=2, base=(4500, 450), cand=(750, 45))

    evaluate_alert_rules(rules=[rule("conversion-drop-vs-control")])

    rollout.refresh_from_db()
    assert Alert.objects.get().model_version == cand
    assert rollout.state == Rollout.State.PAUSED
    event = AuditEvent.objects.get(kind="rollout.paused")
    assert event.reason.startswith("alert conversion-drop-vs-control fired")
