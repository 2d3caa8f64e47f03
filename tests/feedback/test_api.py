import json

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from feedback.api.serializers import IngestBatchSerializer
from feedback.models import IngestBatch
from feedback.services import ingest_feedback_batch
from registry.models import ApiToken
from registry.roles import Actor
from registry.services import revoke_api_token
from tests.factories.feedback import event

FEEDBACK = ["read", "feedback:write"]

URL = "/api/v1/feedback/"


@pytest.fixture
def writer(product_user, token_client):
    return token_client(product_user, "read", "feedback:write")


def post_json(client, body, **headers):
    return client.post(URL, data=json.dumps(body), content_type="application/json", **headers)


def test_post_feedback_answers_202_with_the_batch_location(writer, app_slug):
    response = post_json(writer, [event(app_slug), event(app_slug)])

    assert response.status_code == 202
    batch = IngestBatch.objects.get()
    assert response["Location"] == f"/api/v1/ingest-batches/{batch.pk}"
    assert response.json()["state"] == "pending"
    assert (batch.source, batch.format, batch.raw_size) == ("api", "json", len(bytes(batch.raw)))


def test_post_feedback_answers_what_the_batch_endpoint_serializes(writer, app_slug):
    response = post_json(writer, [event(app_slug)], HTTP_X_REQUEST_ID="r-1")

    stored = IngestBatch.objects.without_raw().get()
    assert response.json() == IngestBatchSerializer(stored).data


def test_post_feedback_stores_the_batch_for_its_user_in_one_insert(
    writer, product_user, app_slug, django_assert_max_num_queries
):
    with django_assert_max_num_queries(4) as captured:  # token, roles, batch insert, last use
        response = post_json(writer, [event(app_slug)])

    batch = IngestBatch.objects.get(pk=response.json()["id"])
    assert (batch.created_by, batch.state, bytes(batch.raw)[:1]) == (product_user, "pending", b"[")
    inserts = [
        q for q in captured.captured_queries if "INSERT INTO feedback_ingestbatch" in q["sql"]
    ]
    assert len(inserts) == 1  # logged like any query, though sent through a bound cursor


def test_post_feedback_reads_no_token_row_once_the_token_is_remembered(
    product_user, make_token, app_slug, django_assert_max_num_queries
):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_token(product_user, *FEEDBACK)}")
    post_json(client, [event(app_slug)])

    with django_assert_max_num_queries(2) as captured:  # the user's roles, the batch insert
        response = post_json(client, [event(app_slug)])

    assert response.status_code == 202
    assert not any("registry_apitoken" in q["sql"] for q in captured.captured_queries)


def test_post_feedback_refuses_a_token_revoked_after_it_was_remembered(
    product_user, make_token, app_slug
):
    raw = make_token(product_user, *FEEDBACK)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert post_json(client, [event(app_slug)]).status_code == 202

    revoke_api_token(actor=Actor.system(), token=ApiToken.objects.get(user=product_user))

    assert post_json(client, [event(app_slug)]).status_code == 401


def test_post_feedback_checks_the_token_every_time_without_the_cache(
    product_user, make_token, app_slug, settings, django_assert_max_num_queries
):
    settings.API_TOKEN_CACHE_S = 0  # the shared token cache (registry.services.tokens) off
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_token(product_user, *FEEDBACK)}")
    post_json(client, [event(app_slug)])

    with django_assert_max_num_queries(3) as captured:
        post_json(client, [event(app_slug)])

    assert any("registry_apitoken" in q["sql"] for q in captured.captured_queries)


def test_post_feedback_enqueues_the_batch_after_commit(
    writer, app_slug, django_capture_on_commit_callbacks, monkeypatch
):
    stored_when_sent = []
    monkeypatch.setattr(
        "feedback.services.ingest.enqueue_batch",
        lambda: stored_when_sent.append(IngestBatch.objects.count()),
    )

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        post_json(writer, [event(app_slug)])

    assert len(callbacks) == 1  # run at the commit, not before
    assert stored_when_sent == [1]


def test_post_feedback_keeps_the_request_id_for_the_workers_log(writer, app_slug):
    post_json(writer, [event(app_slug)], HTTP_X_REQUEST_ID="pipeline-run-42")

    assert IngestBatch.objects.get().request_id == "pipeline-run-42"


def test_batch_status_shows_counts_and_errors_once_done(writer, app_slug):
    response = post_json(writer, [event(app_slug), {**event(app_slug), "kind": "nope"}])
    ingest_feedback_batch(batch_id=response.json()["id"])

    status = writer.get(response["Location"])

    assert status.status_code == 200
    body = status.json()
    assert (body["state"], body["accepted"], body["rejected"]) == ("done", 1, 1)
    assert body["errors"][0]["index"] == 1
    assert body["errors"][0]["field"] == "kind"


def test_idempotency_key_replays_the_first_response(writer, app_slug):
    body = [event(app_slug)]
    first = post_json(writer, body, HTTP_IDEMPOTENCY_KEY="k-1")

    second = post_json(writer, body, HTTP_IDEMPOTENCY_KEY="k-1")

    assert second.status_code == 202
    assert second["Location"] == first["Location"]
    assert IngestBatch.objects.count() == 1


def test_idempotency_key_with_another_body_is_409(writer, app_slug):
    post_json(writer, [event(app_slug)], HTTP_IDEMPOTENCY_KEY="k-2")

    response = post_json(writer, [event(app_slug)], HTTP_IDEMPOTENCY_KEY="k-2")

    assert response.status_code == 409
    assert IngestBatch.objects.count() == 1


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{not json", 400),
        (b'"a string"', 400),
        (b"42", 400),
        (b"[]", 400),
        (b"null", 400),
        (b'[{"event_id": "\xff"}]', 400),  # not UTF-8 inside a string
        (b'[{"a": 1}, ]', 400),
        (b"[" * 5000 + b"]" * 5000, 400),  # nested past any parser's limit
        (json.dumps([{}] * 10_001).encode(), 413),
        (b"[" + b" " * (5 * 1024 * 1024) + b"]", 413),
    ],
)
def test_bad_envelope_is_refused_at_once_with_nothing_stored(writer, body, status):
    response = writer.post(URL, data=body, content_type="application/json")

    assert response.status_code == status
    assert response.json()["error"]["status"] == status
    assert not IngestBatch.objects.exists()


def test_unsupported_content_type_is_415(writer):
    response = writer.post(URL, data=b"<xml/>", content_type="application/xml")

    assert response.status_code == 415
    assert not IngestBatch.objects.exists()


def test_post_feedback_over_the_rate_limit_is_429(writer, app_slug, settings, monkeypatch):
    from rest_framework.throttling import ScopedRateThrottle

    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", {"ingest": "2/min"})
    cache.clear()
    for _ in range(2):
        assert post_json(writer, [event(app_slug)]).status_code == 202

    response = post_json(writer, [event(app_slug)])

    assert response.status_code == 429
    assert "Retry-After" in response
    assert IngestBatch.objects.count() == 2


def test_post_feedback_without_a_token_is_401(client, app_slug):
    response = post_json(client, [event(app_slug)])

    assert response.status_code == 401
    assert not IngestBatch.objects.exists()


def test_post_feedback_with_a_read_only_token_is_403(product_user, token_client, app_slug):
    response = post_json(token_client(product_user, "read"), [event(app_slug)])

    assert response.status_code == 403


def test_post_feedback_as_a_viewer_is_403(viewer_user, token_client, app_slug):
    response = post_json(token_client(viewer_user, "feedback:write"), [event(app_slug)])

    assert response.status_code == 403


def test_another_users_batch_is_404(writer, viewer_user, token_client, app_slug):
    location = post_json(writer, [event(app_slug)])["Location"]

    response = token_client(viewer_user, "read").get(location)

    assert response.status_code == 404


def test_devops_sees_every_batch(writer, devops_user, token_client, app_slug):
    location = post_json(writer, [event(app_slug)])["Location"]

    assert token_client(devops_user, "read").get(location).status_code == 200


def test_raw_csv_body_is_accepted(writer, app_slug):
    one = event(app_slug)
    csv_body = "event_id,occurred_at,application,kind\n"
    csv_body += f"{one['event_id']},{one['occurred_at']},{app_slug},click\n"

    response = writer.post(URL, data=csv_body.encode(), content_type="text/csv")

    assert response.status_code == 202
    assert IngestBatch.objects.get().format == "csv"


def test_multipart_upload_goes_the_same_path(writer, app_slug):
    from django.core.files.uploadedfile import SimpleUploadedFile

    lines = "\n".join(
        json.dumps({k: v for k, v in event(app_slug).items() if k != "application"})
        for _ in range(3)
    )
    upload = SimpleUploadedFile("events.jsonl", lines.encode(), "application/x-ndjson")

    response = writer.post(URL, {"file": upload, "application": app_slug}, format="multipart")

    assert response.status_code == 202
    batch = IngestBatch.objects.get()
    ingest_feedback_batch(batch_id=batch.pk)
    batch.refresh_from_db()
    assert (batch.source, batch.format, batch.accepted) == ("upload", "jsonl", 3)


# --- Reports ---

REPORTS = "/api/v1/feedback-reports/"


def test_file_report_through_the_api(writer, served):
    app = served.deployment.application

    response = writer.post(
        REPORTS,
        {"application": app.slug, "kind": "conversion_drop", "title": "Checkout fell 20%",
         "severity": "high", "example_request_ids": ["r1"]},
        format="json",
    )  # fmt: skip

    assert response.status_code == 201
    body = response.json()
    assert (body["state"], body["severity"], body["application"]) == ("open", "high", app.slug)
    assert body["model_version"] == str(served.model_version)


def test_file_report_for_an_unknown_application_is_400(writer):
    response = writer.post(
        REPORTS, {"application": "nope", "kind": "other", "title": "x"}, format="json"
    )

    assert response.status_code == 400
    assert "application" in response.json()["error"]["fields"]


@pytest.mark.parametrize(
    "ref", ["ranker:\u00b2", "ranker:" + "9" * 30, "ranker:" + "9" * 12, "ranker:0", "ranker", ":1"]
)
def test_file_report_with_a_malformed_version_is_400_on_that_field(writer, served, ref):
    app = served.deployment.application

    response = writer.post(
        REPORTS, {"application": app.slug, "kind": "other", "title": "x", "model_version": ref},
        format="json",
    )  # fmt: skip

    assert response.status_code == 400
    assert "model_version" in response.json()["error"]["fields"]


def test_triage_through_the_api_needs_devops(
    writer, devops_user, token_client, feedback_report_factory
):
    report = feedback_report_factory()
    url = f"{REPORTS}{report.pk}/acknowledge/"

    assert writer.post(url, {}, format="json").status_code == 403
    response = token_client(devops_user, "read", "feedback:write").post(url, {}, format="json")

    assert response.status_code == 200
    report.refresh_from_db()
    assert report.acknowledged_by == devops_user


def test_resolving_twice_is_409(devops_user, token_client, feedback_report_factory):
    report = feedback_report_factory(state="resolved")
    client = token_client(devops_user, "read", "feedback:write")

    response = client.post(f"{REPORTS}{report.pk}/resolve/", {"note": "again"}, format="json")

    assert response.status_code == 409


def test_an_event_with_a_number_beyond_a_float_is_rejected_alone(writer, app_slug):
    """JSON's grammar allows 1e999; no double holds it: that event is the one at fault."""
    good = json.dumps(event(app_slug)).encode()
    body = b"[" + good + b', {"value": 1e999}, ' + json.dumps(event(app_slug)).encode() + b"]"

    response = writer.post(URL, data=body, content_type="application/json")
    assert response.status_code == 202
    batch = IngestBatch.objects.get()
    ingest_feedback_batch(batch_id=batch.pk)

    batch.refresh_from_db()
    assert (batch.accepted, batch.rejected) == (2, 1)
    assert [(e["index"], e["field"]) for e in batch.errors] == [(1, "__all__")]
    assert "not valid JSON" in batch.errors[0]["message"]
