import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from feedback.models import FeedbackReport, IngestBatch
from feedback.services import ingest_feedback_batch
from tests.factories.feedback import event


@pytest.fixture
def product_client(client, product_user):
    client.force_login(product_user)
    return client


@pytest.fixture
def devops_client(client, devops_user):
    client.force_login(devops_user)
    return client


def _csv(app_slug, bad_kind=False):
    good = event(app_slug, "click")
    bad = event(app_slug, "purchase" if bad_kind else "click")
    lines = ["event_id,occurred_at,application,kind"]
    lines += [f"{e['event_id']},{e['occurred_at']},{app_slug},{e['kind']}" for e in (good, bad)]
    return SimpleUploadedFile("events.csv", "\n".join(lines).encode(), "text/csv")


def test_upload_stores_a_batch_and_redirects_to_its_page(product_client, app_slug):
    response = product_client.post(reverse("feedback:upload"), {"file": _csv(app_slug)})

    batch = IngestBatch.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("feedback:batch-detail", args=[batch.pk])
    assert (batch.source, batch.format, batch.filename) == ("upload", "csv", "events.csv")
    assert batch.request_id == response["X-Request-ID"]  # the worker logs under it


def test_upload_refuses_a_file_that_is_not_csv_or_jsonl(product_client):
    upload = SimpleUploadedFile("events.xlsx", b"PK\x03\x04", "application/octet-stream")

    response = product_client.post(reverse("feedback:upload"), {"file": upload})

    assert response.status_code == 200
    assert "Upload a .csv" in response.content.decode()
    assert not IngestBatch.objects.exists()


def test_viewer_cannot_upload(client, viewer_user, app_slug):
    client.force_login(viewer_user)

    response = client.post(reverse("feedback:upload"), {"file": _csv(app_slug)})

    assert response.status_code == 403
    assert not IngestBatch.objects.exists()


def test_batch_page_shows_rejected_rows_once_done(product_client, app_slug):
    product_client.post(reverse("feedback:upload"), {"file": _csv(app_slug, bad_kind=True)})
    batch = IngestBatch.objects.get()
    ingest_feedback_batch(batch_id=batch.pk)

    response = product_client.get(
        reverse("feedback:batch-detail", args=[batch.pk]), HTTP_HX_REQUEST="true"
    )

    body = response.content.decode()
    assert 'data-state="done"' in body
    assert "hx-trigger" not in body  # done: the page stops polling
    assert "kind must be one of" in body


def test_open_batch_page_keeps_polling(product_client, ingest_batch_factory, product_user):
    batch = ingest_batch_factory(created_by=product_user)

    response = product_client.get(reverse("feedback:batch-detail", args=[batch.pk]))

    assert "hx-trigger" in response.content.decode()


def test_another_users_batch_page_is_404(client, viewer_user, ingest_batch_factory, product_user):
    batch = ingest_batch_factory(created_by=product_user)
    client.force_login(viewer_user)

    assert client.get(reverse("feedback:batch-detail", args=[batch.pk])).status_code == 404


def test_csv_template_lists_every_column(product_client):
    response = product_client.get(reverse("feedback:csv-template"))

    header = response.content.decode().splitlines()[0]
    assert header.startswith("event_id,occurred_at,application,model_version,role,kind")
    assert response["Content-Type"] == "text/csv"


def test_report_form_prefills_the_serving_version(product_client, served):
    app = served.deployment.application

    response = product_client.get(reverse("feedback:report-new") + f"?application={app.slug}")

    assert response.context["form"].initial["model_version"] == served.model_version


def test_report_form_files_a_report(product_client, served):
    app = served.deployment.application

    response = product_client.post(
        reverse("feedback:report-new"),
        {"application": app.pk, "kind": "bad_recommendation", "severity": "high",
         "title": "Snow boots for Miami", "example_request_ids": "r1, r2"},
    )  # fmt: skip

    assert response.status_code == 302
    report = FeedbackReport.objects.get()
    assert report.example_request_ids == ["r1", "r2"]
    assert report.model_version_id == served.model_version_id


def test_triage_list_acknowledge_then_resolve(devops_client, feedback_report_factory, devops_user):
    report = feedback_report_factory(title="Odd ranking")
    assert "Odd ranking" in devops_client.get(reverse("feedback:reports")).content.decode()

    devops_client.post(reverse("feedback:report-acknowledge", args=[report.pk]))
    devops_client.post(reverse("feedback:report-resolve", args=[report.pk]), {"note": "fixed"})

    report.refresh_from_db()
    assert (report.state, report.resolved_by, report.resolution) == (
        "resolved",
        devops_user,
        "fixed",
    )


def test_product_user_cannot_triage_from_the_page(product_client, feedback_report_factory):
    report = feedback_report_factory()

    response = product_client.post(reverse("feedback:report-acknowledge", args=[report.pk]))

    assert response.status_code == 403


@pytest.mark.parametrize("reports", [1, 10])
def test_triage_list_query_count_is_flat(
    devops_client, feedback_report_factory, django_assert_max_num_queries, reports
):
    feedback_report_factory.create_batch(reports)

    with django_assert_max_num_queries(8):
        devops_client.get(reverse("feedback:reports"))


def test_application_sources_fragment_shows_last_error(product_client, feedback_source_factory):
    source = feedback_source_factory(consecutive_failures=2, last_error="HTTP 503 from upstream")

    response = product_client.get(
        reverse("feedback:application-sources", args=[source.application.slug])
    )

    assert "HTTP 503 from upstream" in response.content.decode()


# --- The list of batches ---


def _batch_ids(response):
    return [b.pk for b in response.context["page"].object_list]


def test_batch_list_shows_a_users_own_batches_newest_first(
    product_client, ingest_batch_factory, product_user, devops_user
):
    older, newer = ingest_batch_factory.create_batch(2, created_by=product_user)
    ingest_batch_factory(created_by=devops_user)  # someone else's

    response = product_client.get(reverse("feedback:batches"))

    assert _batch_ids(response) == [newer.pk, older.pk]


def test_devops_see_every_batch(devops_client, ingest_batch_factory, product_user, devops_user):
    mine, theirs = (
        ingest_batch_factory(created_by=devops_user),
        ingest_batch_factory(created_by=product_user),
    )

    response = devops_client.get(reverse("feedback:batches"))

    assert set(_batch_ids(response)) == {mine.pk, theirs.pk}


def test_batch_list_filters_by_state_and_source(devops_client, ingest_batch_factory):
    failed_upload = ingest_batch_factory(state="failed", source="upload")
    ingest_batch_factory(state="failed", source="api")
    ingest_batch_factory(state="done", source="upload")

    response = devops_client.get(
        reverse("feedback:batches"), {"state": "failed", "source": "upload"}
    )

    assert _batch_ids(response) == [failed_upload.pk]


def test_batch_list_shows_counts_and_links_to_each_batch(devops_client, ingest_batch_factory):
    batch = ingest_batch_factory(state="done", total=10, accepted=7, duplicate=1, rejected=2)

    page = devops_client.get(reverse("feedback:batches")).content.decode()

    assert reverse("feedback:batch-detail", args=[batch.pk]) in page
    assert '<span class="text-bad">2</span>' in page


@pytest.mark.parametrize("number", ["\u00b2", "9" * 5000, "-1", "x", "99"])
def test_batch_list_page_number_out_of_range_or_not_a_number_still_answers(
    devops_client, ingest_batch_factory, number
):
    ingest_batch_factory()

    assert devops_client.get(reverse("feedback:batches"), {"page": number}).status_code == 200


@pytest.mark.parametrize("batches", [1, 60])
def test_batch_list_query_count_is_flat(
    devops_client, ingest_batch_factory, django_assert_max_num_queries, batches
):
    ingest_batch_factory.create_batch(batches, state="done")

    # session, user, the user's roles twice (menu; which batches), the count, the page
    with django_assert_max_num_queries(6):
        assert devops_client.get(reverse("feedback:batches")).status_code == 200
