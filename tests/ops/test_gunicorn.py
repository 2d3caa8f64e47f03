"""Under real gunicorn with several workers, every worker answers /metrics alike."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from django.db import connection
from prometheus_client.parser import text_string_to_metric_families

from feedback.models import IngestBatch
from tests.markers import needs_postgres

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def gunicorn():
    db = connection.settings_dict
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",  # noqa: E501
        "METRICS_CACHE_S": "0",
        "ALLOWED_HOSTS": "127.0.0.1",
        "LOG_FORMAT": "json",
    }
    if db.get("PASSWORD"):
        env["PGPASSWORD"] = db["PASSWORD"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "dashboard.wsgi", "-c", "gunicorn.conf.py",
         "--bind", f"127.0.0.1:{port}", "--workers", "2", "--threads", "1", "--preload"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url + "/livez", timeout=1).read()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail(f"gunicorn did not start: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.2)
    yield url
    proc.send_signal(signal.SIGINT)  # quick shutdown; TERM would wait for graceful_timeout
    proc.wait(timeout=10)


def pending(url: str) -> float:
    request = urllib.request.Request(url + "/metrics", headers={"Connection": "close"})
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        if family.name == "modelops_ingest_batches":
            return next(s.value for s in family.samples if s.labels["state"] == "pending")
    raise AssertionError("modelops_ingest_batches missing")


@needs_postgres
@pytest.mark.django_db(transaction=True)
def test_every_worker_reports_the_same_figures(gunicorn, ingest_batch_factory):
    ingest_batch_factory.create_batch(2, state=IngestBatch.State.PENDING)

    first = {pending(gunicorn) for _ in range(9)}
    ingest_batch_factory(state=IngestBatch.State.PENDING)
    second = {pending(gunicorn) for _ in range(9)}

    assert first == {2}
    assert second == {3}


def test_the_wsgi_module_loads_every_view_before_the_first_request():
    # gunicorn preloads dashboard.wsgi in its master (gunicorn.conf.py) and forks workers from
    # it: they must not import the views during their first requests
    probe = "import sys, dashboard.wsgi; print('feedback.api.views' in sys.modules)"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "dashboard.settings"}
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "True"
