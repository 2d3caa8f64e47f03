"""Request ids: in and out of HTTP, in every log line, and into the Celery tasks enqueued."""

import json
import logging

from celery import shared_task
from kombu import Connection

from dashboard.celery import app as celery_app
from dashboard.logging import JsonFormatter, RequestIdFilter, request_id_var
from tests.markers import needs_redis


@shared_task(name="tests.ops.echo_request_id")
def echo_request_id():
    return request_id_var.get()


def test_a_given_request_id_is_echoed(client):
    response = client.get("/livez", HTTP_X_REQUEST_ID="ci-run-42.step-3")

    assert response["X-Request-ID"] == "ci-run-42.step-3"


def test_a_missing_or_hostile_request_id_is_replaced(client):
    hostile = client.get("/livez", HTTP_X_REQUEST_ID='x" \n{"level":"ERROR"}')
    missing = client.get("/livez")

    assert len(hostile["X-Request-ID"]) == 32
    assert hostile["X-Request-ID"] != missing["X-Request-ID"]


def test_json_lines_carry_the_request_id_and_extras():
    record = logging.LogRecord(
        "dashboard.x", logging.WARNING, __file__, 1, "hi %s", ("there",), None
    )
    record.batch = 7
    token = request_id_var.set("rid-1")
    try:
        RequestIdFilter().filter(record)
        line = json.loads(JsonFormatter().format(record))
    finally:
        request_id_var.reset(token)

    assert line["message"] == "hi there"
    assert line["request_id"] == "rid-1"
    assert line["level"] == "WARNING"
    assert line["batch"] == 7


@needs_redis
def test_a_published_task_carries_the_request_id_header(settings):
    # published to the real broker (Redis in the suite) and read back without a worker
    queue = "ops-test-request-id"
    token = request_id_var.set("rid-publish")
    try:
        echo_request_id.apply_async(queue=queue)
    finally:
        request_id_var.reset(token)

    with Connection(celery_app.conf.broker_url) as conn:
        simple = conn.SimpleQueue(queue)
        message = simple.get(timeout=5)
        message.ack()
        simple.close()

    assert message.headers["request_id"] == "rid-publish"
    assert message.headers["task"] == "tests.ops.echo_request_id"


def test_the_task_runs_under_the_request_id_it_was_sent_with():
    result = echo_request_id.apply(headers={"request_id": "rid-worker"})

    assert result.get() == "rid-worker"
    assert request_id_var.get() is None  # unbound after the task
