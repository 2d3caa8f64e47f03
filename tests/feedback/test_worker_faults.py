"""At-least-once delivery survives a killed worker and a Redis that lost its queue.

A real Celery worker process on Redis, on a private queue, against the test database.
Timing is kept short with CELERY_VISIBILITY_TIMEOUT=10 in the worker's environment.
"""

import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from django.conf import settings as django_settings
from django.db import connection
from django.db.models import Sum

from feedback.models import FeedbackEvent, IngestBatch, QualityRollup
from feedback.services import requeue_stale_batches, submit_batch
from registry.roles import Actor
from tests.factories.feedback import event

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
VISIBILITY_TIMEOUT = 10


def _database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"] != "django.db.backends.postgresql":
        pytest.skip("a real worker needs PostgreSQL (set DATABASE_URL)")
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"postgres://{db['USER']}{password}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}"


class Worker:
    """One `celery worker` process (and its pool child) in its own process group."""

    def __init__(self, queue: str) -> None:
        self.queue = queue
        self.proc: subprocess.Popen | None = None
        self.env = {
            **os.environ,
            "DATABASE_URL": _database_url(),
            "REDIS_URL": django_settings.REDIS_URL,
            "CELERY_VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT),
            "DJANGO_SETTINGS_MODULE": "dashboard.settings",
        }

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "dashboard", "worker", "-Q", self.queue,
             "-c", "1", "-l", "warning", "--without-gossip", "--without-mingle",
             "--without-heartbeat", "-n", f"{self.queue}@%h"],
            cwd=ROOT, env=self.env, start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def kill(self) -> None:
        """SIGKILL the whole group: no graceful shutdown, no ack, no rollback by Python."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def queue(settings):
    if not settings.REDIS_URL:
        pytest.skip("worker tests need Redis (set REDIS_URL)")
    name = f"ingest-test-{uuid.uuid4().hex[:8]}"
    settings.FEEDBACK_INGEST_QUEUE = name
    yield name
    client = redis.Redis.from_url(settings.REDIS_URL)
    for key in client.scan_iter(f"{name}*"):
        client.delete(key)


@pytest.fixture
def worker(queue):
    w = Worker(queue)
    yield w
    w.stop()


def _submit(slug: str, batches: int, size: int) -> list[int]:
    ids = []
    for _ in range(batches):
        raw = __import__("json").dumps([event(slug, "click", value=1.0) for _ in range(size)])
        batch, _ = submit_batch(actor=Actor.system("tests"), raw=raw.encode())
        ids.append(batch.pk)
    return ids


def _wait_until(predicate, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


def _all_done() -> bool:
    return not IngestBatch.objects.exclude(state="done").exists()


def _assert_totals_exact(expected: int) -> None:
    assert FeedbackEvent.objects.count() == expected
    assert QualityRollup.objects.aggregate(n=Sum("count"))["n"] == expected
    assert IngestBatch.objects.aggregate(n=Sum("accepted"))["n"] == expected
    assert IngestBatch.objects.aggregate(n=Sum("duplicate"))["n"] == 0


def test_worker_killed_mid_batch_then_restarted_loses_and_doubles_nothing(worker, app_slug):
    ids = _submit(app_slug, batches=4, size=3000)
    worker.start()
    caught = _wait_until(lambda: IngestBatch.objects.filter(state="processing").exists(), 30, 0.01)
    assert caught, "the worker never started a batch"

    worker.kill()
    in_flight = IngestBatch.objects.filter(state="processing").count()
    worker.start()

    assert _wait_until(_all_done, timeout=90, step=0.5), list(
        IngestBatch.objects.values_list("id", "state", "attempts")
    )
    assert in_flight >= 1  # the task claimed a group: one or more batches
    assert IngestBatch.objects.filter(pk__in=ids, attempts__gte=2).exists()
    _assert_totals_exact(4 * 3000)


def test_queue_lost_in_redis_is_recovered_by_the_sweeper(worker, queue, app_slug, settings):
    _submit(app_slug, batches=3, size=500)
    client = redis.Redis.from_url(settings.REDIS_URL)
    assert client.llen(queue) == 1  # one wake-up for the three: each task expands all
    for key in client.scan_iter(f"{queue}*"):  # Redis restarted empty: every message is gone
        client.delete(key)
    worker.start()
    time.sleep(3)
    assert IngestBatch.objects.filter(state="pending").count() == 3

    requeued = requeue_stale_batches(pending_for=timedelta(0))

    assert len(requeued) == 3
    assert _wait_until(_all_done, timeout=60, step=0.2)
    _assert_totals_exact(3 * 500)
