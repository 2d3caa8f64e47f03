"""A product manager uploads a CSV with one bad row in a real browser and watches it finish."""

from pathlib import Path

import pytest

from feedback.models import FeedbackEvent, IngestBatch
from feedback.services import ingest_feedback_batch
from tests.factories import registry as rf
from tests.factories.feedback import event

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_browser_upload_with_one_bad_row(page, live_server, served, tmp_path, monkeypatch):
    # the broker is a boundary: this test plays the worker itself, below
    monkeypatch.setattr("feedback.services.ingest.enqueue_batch", lambda: None)
    rf.UserFactory(username="pat", roles=["product"])
    slug = served.deployment.application.slug
    rows = [event(slug, "click") for _ in range(3)]
    lines = ["event_id,occurred_at,application,kind"]
    lines += [f"{e['event_id']},{e['occurred_at']},{slug},click" for e in rows]
    lines.append(f"not-a-uuid,{rows[0]['occurred_at']},{slug},click")
    csv_file = tmp_path / "clicks.csv"
    csv_file.write_text("\n".join(lines) + "\n")

    page.goto(live_server.url + "/feedback/upload/")
    page.fill("#id_username", "pat")
    page.fill("#id_password", "pw-for-tests-1")
    page.click("button[type=submit]")
    page.set_input_files("#id_file", str(csv_file))
    page.click("form[enctype] button[type=submit]")
    page.wait_for_url("**/feedback/batches/*/")
    assert page.locator("[data-testid=batch-state]").inner_text() == "pending"

    ingest_feedback_batch(batch_id=IngestBatch.objects.get().pk)  # what the worker does

    page.locator("[data-testid=batch-state]", has_text="done").wait_for(timeout=5000)
    assert page.locator("[data-testid=batch-accepted]").inner_text() == "3"
    assert page.locator("[data-testid=batch-rejected]").inner_text() == "1"
    error_row = page.locator("[data-testid=batch-errors] tbody tr")
    assert error_row.count() == 1
    assert "event_id" in error_row.inner_text()
    assert "4" in error_row.locator("td").first.inner_text()  # the 4th data row
    assert FeedbackEvent.objects.count() == 3
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "feedback-batch.png"), full_page=True)
