"""Pull sources against a real HTTP server on 127.0.0.1."""

import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from django.utils import timezone

from feedback.models import FeedbackEvent, FeedbackSource, IngestBatch
from feedback.services import ingest_feedback_batch, poll_due_sources, poll_source
from tests.factories.feedback import event


class Feed:
    """What the fake upstream serves: pages by cursor, scripted failures, a CSV file."""

    def __init__(self):
        self.pages = {}
        self.fail_next = 0
        self.csv = ""
        self.seen_cursors = []


@pytest.fixture
def feed():
    state = Feed()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            url = urlsplit(self.path)
            cursor = parse_qs(url.query).get("cursor", [""])[0]
            state.seen_cursors.append(cursor)
            if state.fail_next:
                state.fail_next -= 1
                self.send_response(503)
                self.end_headers()
                return
            if url.path == "/events.csv":
                body, ctype = state.csv.encode(), "text/csv"
            else:
                body, ctype = (
                    json.dumps(state.pages.get(cursor, {"events": []})).encode(),
                    "application/json",
                )
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.base = f"http://127.0.0.1:{server.server_address[1]}"
    yield state
    server.shutdown()
    server.server_close()


def _no_app(e):
    return {k: v for k, v in e.items() if k != "application"}


def _expand_all():
    for pk in IngestBatch.objects.filter(state="pending").values_list("pk", flat=True):
        ingest_feedback_batch(batch_id=pk)


def test_http_source_follows_its_cursor_backs_off_on_error_and_recovers(
    feed, served, feedback_source_factory
):
    app = served.deployment.application
    feed.pages[""] = {"events": [_no_app(event(app.slug)) for _ in range(2)], "next_cursor": "c1"}
    feed.pages["c1"] = {"events": [_no_app(event(app.slug))], "next_cursor": "c2"}
    source = feedback_source_factory(application=app, url=f"{feed.base}/events")

    first = poll_source(source_id=source.pk)
    _expand_all()
    first.refresh_from_db()
    source.refresh_from_db()
    assert (first.source, first.accepted) == ("pull", 2)
    assert source.cursor == "c1"

    feed.fail_next = 1
    assert poll_source(source_id=source.pk) is None
    source.refresh_from_db()
    assert source.consecutive_failures == 1
    assert "503" in source.last_error
    assert source.next_poll_at - source.last_polled_at == 2 * source.interval
    assert source.cursor == "c1"

    poll_source(source_id=source.pk)
    _expand_all()
    source.refresh_from_db()
    assert (source.cursor, source.consecutive_failures) == ("c2", 0)
    assert source.last_success_at >= source.last_error_at
    assert feed.seen_cursors == ["", "c1", "c1"]
    assert FeedbackEvent.objects.count() == 3


def test_csv_source_takes_only_rows_newer_than_its_high_water_mark(
    feed, served, feedback_source_factory
):
    app = served.deployment.application
    rows = [event(app.slug, "click") for _ in range(3)]
    header = "event_id,occurred_at,kind\n"
    feed.csv = header + "".join(f"{e['event_id']},{e['occurred_at']},click\n" for e in rows)
    source = feedback_source_factory(
        application=app, kind=FeedbackSource.Kind.CSV_URL, url=f"{feed.base}/events.csv"
    )
    poll_source(source_id=source.pk)
    later = event(app.slug, "click", occurred_at=timezone.now().isoformat())
    feed.csv += f"{later['event_id']},{later['occurred_at']},click\n"

    second = poll_source(source_id=source.pk)

    _expand_all()
    second.refresh_from_db()
    assert second.accepted == 1
    assert FeedbackEvent.objects.count() == 4


def test_unreachable_source_records_the_error(served, feedback_source_factory):
    source = feedback_source_factory(
        application=served.deployment.application, url="http://127.0.0.1:9/nothing"
    )

    poll_source(source_id=source.pk)

    source.refresh_from_db()
    assert "cannot reach" in source.last_error
    assert source.consecutive_failures == 1


def test_poll_due_sources_skips_sources_not_due_or_disabled(feed, feedback_source_factory):
    later = timezone.now() + timedelta(minutes=3)
    feedback_source_factory(url=f"{feed.base}/a", next_poll_at=later)
    feedback_source_factory(url=f"{feed.base}/b", enabled=False)
    due = feedback_source_factory(url=f"{feed.base}/c")

    assert poll_due_sources() == 1

    due.refresh_from_db()
    assert due.last_success_at is not None
