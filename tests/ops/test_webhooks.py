"""Outbound webhooks: subscriptions, signed delivery to a real receiver, retry, delivery log."""

import hashlib
import hmac
import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.utils import timezone

from dashboard.celery import app as celery_app
from dashboard.models import WebhookDelivery, WebhookSubscription
from dashboard.webhooks import deliver_webhook
from feedback.services.alerts import raise_alert, resolve_alert
from registry.services import move_alias, register_version, set_allocation
from registry.services.traffic import AllocationSpec

SECRET = "s3cret-for-tests"


class Receiver:
    """An HTTP server on 127.0.0.1 answering the queued status codes, recording requests."""

    def __init__(self, statuses):
        self.statuses = list(statuses)
        self.requests = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests.append((dict(self.headers), body))
                status = outer.statuses.pop(0) if outer.statuses else 200
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b'{"ok": true}' if status < 300 else b"boom")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made = []

    def make(*statuses):
        made.append(Receiver(statuses))
        return made[-1]

    yield make
    for r in made:
        r.close()


@pytest.fixture(autouse=True)
def _eager(monkeypatch):
    monkeypatch.setitem(celery_app.conf, "task_always_eager", True)


def verify(headers, body, secret=SECRET):
    expected = hmac.new(
        secret.encode(), headers["X-Modelops-Timestamp"].encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest(headers["X-Modelops-Signature"], f"sha256={expected}")


def register(model, actor):
    return register_version(
        actor=actor,
        registered_model=model,
        artifact_uri="s3://m/1",
        sha256="a" * 64,
        size_bytes=1,
        trained_at=timezone.now(),
    )


def test_a_registered_version_reaches_the_receiver_signed(
    receiver, registered_model_factory, devops_actor, django_capture_on_commit_callbacks
):
    hook = receiver(200)
    WebhookSubscription.objects.create(
        name="ci", url=hook.url, secret=SECRET, events=["version.registered"]
    )
    model = registered_model_factory(name="ranker")

    with django_capture_on_commit_callbacks(execute=True):
        version = register(model, devops_actor)

    headers, body = hook.requests[0]
    assert verify(headers, body)
    payload = json.loads(body)
    assert payload["event"] == headers["X-Modelops-Event"] == "version.registered"
    assert payload["target"]["id"] == str(version.pk)
    assert payload["delivery_id"] == headers["X-Modelops-Delivery"]
    delivery = WebhookDelivery.objects.get()
    assert delivery.state == "delivered"
    assert delivery.last_status_code == 200
    assert delivery.last_response == '{"ok": true}'


def test_a_500_is_retried_with_backoff_under_the_same_delivery_id(
    receiver, registered_model_factory, devops_actor, django_capture_on_commit_callbacks
):
    hook = receiver(500, 200)
    WebhookSubscription.objects.create(name="ci", url=hook.url, secret=SECRET, events=["*"])

    with django_capture_on_commit_callbacks(execute=True):
        register(registered_model_factory(), devops_actor)

    delivery = WebhookDelivery.objects.get()
    assert delivery.state == "pending"
    assert (delivery.attempts, delivery.last_status_code, delivery.last_response) == (
        1,
        500,
        "boom",
    )
    wait = delivery.next_attempt_at - delivery.last_attempt_at
    assert wait == timedelta(seconds=10)

    assert deliver_webhook(delivery_id=delivery.pk) is None  # not due yet: nothing sent
    deliver_webhook(delivery_id=delivery.pk, now=delivery.next_attempt_at)

    delivery.refresh_from_db()
    assert (delivery.state, delivery.attempts, delivery.last_status_code) == ("delivered", 2, 200)
    ids = {h["X-Modelops-Delivery"] for h, _ in hook.requests}
    assert ids == {str(delivery.delivery_id)}
    assert len(hook.requests) == 2


def test_it_gives_up_after_the_last_attempt(receiver, registered_model_factory, devops_actor):
    hook = receiver(*[503] * 10)
    WebhookSubscription.objects.create(name="ci", url=hook.url, secret=SECRET, events=["*"])
    register(registered_model_factory(), devops_actor)  # on_commit never runs: we drive it
    delivery = WebhookDelivery.objects.get()

    at = timezone.now()
    for _ in range(5):
        deliver_webhook(delivery_id=delivery.pk, now=at)
        at += timedelta(hours=1)

    delivery.refresh_from_db()
    assert (delivery.state, delivery.attempts) == ("failed", 5)
    assert deliver_webhook(delivery_id=delivery.pk, now=at) is None


def test_subscriptions_filter_by_event_family_and_application(
    deployment_factory, traffic_allocation_factory, devops_actor, application_factory
):
    deployment = traffic_allocation_factory().deployment
    other = application_factory()
    url = "http://127.0.0.1:9/never"
    WebhookSubscription.objects.create(name="rollouts", url=url, events=["rollout.*"])
    WebhookSubscription.objects.create(name="alloc", url=url, events=["allocation.changed"])
    WebhookSubscription.objects.create(name="elsewhere", url=url, events=["*"], application=other)
    version = deployment.allocations.get().model_version

    set_allocation(
        actor=devops_actor,
        deployment=deployment,
        allocations=[AllocationSpec(model_version=version, weight=100)],
        reason="again",
    )

    assert list(WebhookDelivery.objects.values_list("subscription__name", "event")) == [
        ("alloc", "allocation.changed")
    ]


def test_alias_moves_are_delivered_for_pipelines(registered_model_factory, devops_actor):
    WebhookSubscription.objects.create(name="cd", url="http://127.0.0.1:9/", events=["alias.moved"])
    model = registered_model_factory(name="ranker")
    version = register(model, devops_actor)

    move_alias(actor=devops_actor, registered_model=model, name="champion", version=version)

    delivery = WebhookDelivery.objects.get()
    assert delivery.payload["after"] is not None
    assert delivery.event == "alias.moved"


def test_alerts_firing_and_resolved_become_events(deployment_factory):
    WebhookSubscription.objects.create(name="pager", url="http://127.0.0.1:9/", events=["alert.*"])
    deployment = deployment_factory()
    key = f"deployment:{deployment.pk}"

    raise_alert(
        rule_key="replica-probe-mismatch", target_key=key, summary="x", deployment=deployment
    )
    raise_alert(
        rule_key="replica-probe-mismatch", target_key=key, summary="y", deployment=deployment
    )
    resolve_alert(rule_key="replica-probe-mismatch", target_key=key, reason="fixed")

    events = list(WebhookDelivery.objects.order_by("pk").values_list("event", flat=True))
    assert events == ["alert.firing", "alert.resolved"]
    assert WebhookDelivery.objects.last().payload["alert"]["resolution"] == "fixed"


def test_a_failed_change_sends_nothing(registered_model_factory, devops_actor):
    from django.db import transaction

    WebhookSubscription.objects.create(name="ci", url="http://127.0.0.1:9/", events=["*"])
    model = registered_model_factory()

    def register_then_fail():
        with transaction.atomic():
            register(model, devops_actor)
            raise RuntimeError("the pipeline's next step failed")

    with pytest.raises(RuntimeError):
        register_then_fail()

    assert not WebhookDelivery.objects.exists()


def test_a_disabled_subscription_stops_its_pending_retries(
    receiver, registered_model_factory, devops_actor
):
    hook = receiver(500)
    sub = WebhookSubscription.objects.create(name="ci", url=hook.url, secret=SECRET, events=["*"])
    register(registered_model_factory(), devops_actor)
    delivery = WebhookDelivery.objects.get()
    WebhookSubscription.objects.filter(pk=sub.pk).update(enabled=False)

    deliver_webhook(delivery_id=delivery.pk)

    delivery.refresh_from_db()
    assert (delivery.state, delivery.last_error) == ("failed", "subscription disabled")
    assert hook.requests == []
