"""The request id of an HTTP request shows up in a real Celery worker's JSON log lines."""

import json
import subprocess
import sys
import time

import pytest

from tests.factories.feedback import event
from tests.feedback.test_worker_faults import ROOT, Worker, queue  # noqa: F401  (fixture)

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


class LoggingWorker(Worker):
    """The same worker, logging JSON at INFO to a file the test reads."""

    def start_logging(self, path) -> None:
        self.env["LOG_FORMAT"] = "json"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "dashboard", "worker", "-Q", self.queue,
             "-c", "1", "-l", "info", "--without-gossip", "--without-mingle",
             "--without-heartbeat", "-n", f"{self.queue}@%h"],
            cwd=ROOT, env=self.env, start_new_session=True,
            stdout=path.open("w"), stderr=subprocess.STDOUT,
        )  # fmt: skip


def _wait_for_lines(log, text: str, *, count: int, timeout: float = 60) -> list[dict]:
    """The worker's JSON log lines whose message contains `text`, once there are `count`
    of them (or whatever there is after `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
        found = [x for x in lines if text in x["message"]]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_an_upload_and_its_ingest_task_share_one_request_id(
    queue,  # noqa: F811
    token_client,
    devops_user,
    traffic_allocation_factory,
    tmp_path,
):
    slug = traffic_allocation_factory().deployment.application.slug
    log = tmp_path / "worker.log"
    worker = LoggingWorker(queue)
    worker.start_logging(log)
    try:
        response = token_client(devops_user, "feedback:write").post(
            "/api/v1/feedback/", [event(slug)], format="json", HTTP_X_REQUEST_ID="upload-7f3a"
        )
        assert response.status_code == 202
        done = _wait_for_lines(log, "succeeded", count=1)
    finally:
        worker.stop()

    assert done, log.read_text()[-2000:]
    assert done[0]["request_id"] == "upload-7f3a"
    assert response["X-Request-ID"] == "upload-7f3a"


def test_batches_expanded_by_one_task_are_logged_under_their_own_request_ids(
    queue,  # noqa: F811
    token_client,
    devops_user,
    traffic_allocation_factory,
    tmp_path,
):
    slug = traffic_allocation_factory().deployment.application.slug
    client = token_client(devops_user, "feedback:write")
    ids = {}
    for rid in ("upload-a1", "upload-b2"):  # both wait for one worker task
        response = client.post(
            "/api/v1/feedback/", [event(slug)], format="json", HTTP_X_REQUEST_ID=rid
        )
        ids[response.json()["id"]] = rid
    log = tmp_path / "worker.log"
    worker = LoggingWorker(queue)
    worker.start_logging(log)
    try:
        expanded = _wait_for_lines(log, "expanded", count=2)
    finally:
        worker.stop()

    assert {x["batch_id"]: x["request_id"] for x in expanded} == ids, log.read_text()[-2000:]
