import functools
from datetime import timedelta
from datetime import timezone as dt_timezone

import orjson
import pytest
from django.db import connection
from django.utils import timezone

from feedback.models import FeedbackEvent, IngestBatch, QualityRollup
from feedback.services import claim_batch, ingest_feedback_batch, submit_batch
from registry.models import TrafficAllocation
from registry.roles import Actor
from tests.factories.feedback import event
from tests.markers import needs_postgres


def _rollup_counts():
    return sorted(QualityRollup.objects.values_list("kind", "count", "sum", "sum_sq"))


def test_ingest_feedback_batch_stores_events_and_marks_done(ingest, app_slug, served):
    events = [event(app_slug, "click", value=2.0), event(app_slug, "impression")]

    batch = ingest(events)

    assert (batch.state, batch.total, batch.accepted, batch.duplicate, batch.rejected) == (
        "done",
        2,
        2,
        0,
        0,
    )
    assert set(FeedbackEvent.objects.values_list("model_version_id", flat=True)) == {
        served.model_version_id
    }


def test_ingest_feedback_batch_adds_events_to_hourly_rollups(ingest, app_slug):
    at = timezone.now().replace(minute=30) - timedelta(hours=2)
    events = [event(app_slug, "click", value=v, occurred_at=at.isoformat()) for v in (1.0, 3.0)]

    ingest(events)

    rollup = QualityRollup.objects.get()
    assert (rollup.kind, rollup.count, rollup.sum, rollup.sum_sq) == ("click", 2, 4.0, 10.0)
    assert rollup.hour == at.replace(minute=0, second=0, microsecond=0)


def test_rollup_hours_are_utc_hours_whatever_the_offset_of_occurred_at(ingest, app_slug):
    utc = (timezone.now() - timedelta(hours=3)).replace(minute=40, second=0, microsecond=0)
    india = utc.astimezone(dt_timezone(timedelta(hours=5, minutes=30)))  # 20 minutes past
    events = [
        event(app_slug, "click", occurred_at=utc.isoformat()),
        event(app_slug, "click", occurred_at=india.isoformat()),
        event(app_slug, "click", occurred_at=utc.replace(tzinfo=None).isoformat()),  # naive
    ]

    ingest(events)

    rollup = QualityRollup.objects.get()
    assert (rollup.count, rollup.hour) == (3, utc.replace(minute=0))


def test_ingest_same_events_twice_reports_duplicates_and_keeps_rollups(ingest, app_slug):
    events = [event(app_slug, "conversion", value=1.0) for _ in range(3)]
    ingest(events)
    before = _rollup_counts()

    again = ingest(events)

    assert (again.accepted, again.duplicate, again.rejected) == (0, 3, 0)
    assert _rollup_counts() == before
    assert FeedbackEvent.objects.count() == 3


def test_ingest_counts_a_repeat_inside_one_batch_once(ingest, app_slug):
    one = event(app_slug)

    batch = ingest([one, dict(one)])

    assert (batch.accepted, batch.duplicate) == (1, 1)
    assert QualityRollup.objects.get().count == 1


def test_ingest_treats_other_spellings_of_one_uuid_as_the_same_event(ingest, app_slug):
    one = event(app_slug)
    upper = dict(one, event_id=one["event_id"].upper())
    braced = dict(one, event_id="{" + one["event_id"].replace("-", "") + "}")
    ingest([one])

    again = ingest([upper, braced])

    assert (again.accepted, again.duplicate, again.rejected) == (0, 2, 0)
    assert str(FeedbackEvent.objects.get().event_id) == one["event_id"]
    assert QualityRollup.objects.get().count == 1


def test_ingest_feedback_batch_run_twice_changes_nothing_the_second_time(ingest, app_slug):
    batch = ingest([event(app_slug)])

    assert ingest_feedback_batch(batch_id=batch.pk) == 0

    batch.refresh_from_db()
    assert (batch.accepted, batch.attempts) == (1, 1)
    assert QualityRollup.objects.get().count == 1


def test_claim_batch_skips_a_batch_held_by_a_live_worker(ingest_batch_factory):
    batch = ingest_batch_factory(state="processing", claimed_at=timezone.now())

    assert claim_batch(batch_id=batch.pk) is None


def test_claim_batch_takes_over_a_stale_claim(ingest_batch_factory):
    batch = ingest_batch_factory(
        state="processing", claimed_at=timezone.now() - timedelta(hours=1), attempts=1
    )

    assert claim_batch(batch_id=batch.pk) is not None

    batch.refresh_from_db()
    assert batch.attempts == 2


def test_ingest_accepts_a_single_event_object(ingest_batch_factory, app_slug):
    import json

    batch = ingest_batch_factory(raw=json.dumps(event(app_slug)).encode())

    ingest_feedback_batch(batch_id=batch.pk)

    batch.refresh_from_db()
    assert batch.accepted == 1


# --- The bad-input matrix: each bad event is rejected alone, by index and field ---

NOW = timezone.now()
DEEP = functools.reduce(lambda inner, _: [inner], range(300), [])  # deeper than orjson writes


@pytest.mark.parametrize(
    ("override", "field", "message"),
    [
        ({"event_id": "not-a-uuid"}, "event_id", "UUID"),
        ({"event_id": 12}, "event_id", "UUID"),
        ({"occurred_at": "yesterday"}, "occurred_at", "ISO 8601"),
        ({"occurred_at": None}, "occurred_at", "required"),
        ({"occurred_at": (NOW + timedelta(days=1)).isoformat()}, "occurred_at", "future"),
        ({"occurred_at": (NOW - timedelta(days=31)).isoformat()}, "occurred_at", "retention"),
        ({"application": "no-such-app"}, "application", "unknown application"),
        ({"application": 5}, "application", "string"),
        ({"kind": "purchase"}, "kind", "kind must be one of"),
        ({"kind": ["click"]}, "kind", "kind must be one of"),
        ({"value": "high"}, "value", "number"),
        ({"value": True}, "value", "number"),
        ({"model_version": "ranker"}, "model_version", "<model>:<version>"),
        ({"model_version": "no-such-model:1"}, "model_version", "unknown model version"),
        ({"model_version": "ranker:\u00b2"}, "model_version", "<model>:<version>"),  # '²'.isdigit()
        ({"model_version": "ranker:" + "9" * 30}, "model_version", "<model>:<version>"),
        ({"model_version": {"model": "ranker", "version": 2**63}}, "model_version", "unknown"),
        ({"role": "champion"}, "role", "role must be one of"),
        ({"role": {"arm": "canary"}}, "role", "role must be one of"),
        ({"payload": [1, 2]}, "payload", "JSON object"),
        ({"payload": {"blob": "x" * 5000}}, "payload", "4096"),
        ({"payload": {"deep": DEEP}}, "payload", "nested too deeply"),
        ({"kind": "prediction", "prediction": DEEP, "request_id": "r"}, "prediction", "nested"),
        ({"kind": "label", "label": DEEP}, "label", "nested too deeply"),
        ({"request_id": "r" * 200}, "request_id", "longer than"),
        ({"kind": "label"}, "label", "needs `label`"),
    ],
)
def test_ingest_rejects_a_bad_event_alone(ingest, app_slug, override, field, message):
    good = event(app_slug)
    bad = {**event(app_slug), **override}

    batch = ingest([good, bad])

    assert (batch.accepted, batch.rejected) == (1, 1)
    [error] = batch.errors
    assert (error["index"], error["field"]) == (1, field)
    assert message in error["message"]


def test_ingest_rejects_non_object_events(ingest, app_slug):
    batch = ingest([event(app_slug), "hello", 3])

    assert [(e["index"], e["field"]) for e in batch.errors] == [(1, "__all__"), (2, "__all__")]
    assert batch.accepted == 1


# --- Attribution to a model version ---


def test_version_resolved_from_the_allocation_in_force_at_occurred_at(
    ingest, traffic_allocation_factory, model_version_factory
):
    now = timezone.now()
    old = traffic_allocation_factory(
        valid_from=now - timedelta(days=3), valid_to=now - timedelta(days=1)
    )
    deployment = old.deployment
    new = traffic_allocation_factory(
        deployment=deployment,
        valid_from=now - timedelta(days=1),
        model_version=model_version_factory(),
    )
    slug = deployment.application.slug
    events = [
        event(slug, occurred_at=(now - timedelta(days=2)).isoformat()),
        event(slug, occurred_at=(now - timedelta(hours=1)).isoformat()),
    ]

    ingest(events)

    by_time = FeedbackEvent.objects.order_by("occurred_at").values_list(
        "model_version_id", flat=True
    )
    assert list(by_time) == [old.model_version_id, new.model_version_id]


def test_version_ambiguous_while_two_arms_serve_is_rejected_with_reason(
    ingest, served, traffic_allocation_factory
):
    served.weight = 50
    served.save()
    traffic_allocation_factory(
        deployment=served.deployment, weight=50, role=TrafficAllocation.Role.TREATMENT
    )
    slug = served.deployment.application.slug

    batch = ingest([event(slug)])

    assert batch.rejected == 1
    assert "send model_version or role" in batch.errors[0]["message"]


def test_version_resolved_from_the_role_of_the_arm(ingest, served, traffic_allocation_factory):
    served.weight = 50
    served.save()
    treatment = traffic_allocation_factory(
        deployment=served.deployment, weight=50, role=TrafficAllocation.Role.TREATMENT
    )
    slug = served.deployment.application.slug

    ingest([event(slug, role="treatment")])

    assert FeedbackEvent.objects.get().model_version_id == treatment.model_version_id


def test_version_named_by_the_client_wins(ingest, app_slug, model_version_factory):
    other = model_version_factory()
    ref = f"{other.registered_model.name}:{other.version}"

    ingest([event(app_slug, model_version=ref)])

    assert FeedbackEvent.objects.get().model_version_id == other.pk


def test_event_before_any_allocation_is_rejected(ingest, app_slug):
    long_ago = (timezone.now() - timedelta(days=25)).isoformat()

    batch = ingest([event(app_slug, occurred_at=long_ago)])

    assert "no model version served" in batch.errors[0]["message"]


# --- Delayed labels ---


def test_label_joins_the_prediction_and_counts_for_the_predicting_version(
    ingest, served, model_version_factory
):
    slug = served.deployment.application.slug
    predicted = timezone.now() - timedelta(days=3)
    ingest(
        [
            event(
                slug,
                "prediction",
                prediction="cat",
                request_id="r1",
                occurred_at=predicted.isoformat(),
            )
        ]
    )
    # a new version serves by the time the label arrives
    newer = model_version_factory()
    served.valid_to = timezone.now() - timedelta(days=1)
    served.save()
    served.__class__.objects.create(
        deployment=served.deployment,
        model_version=newer,
        weight=100,
        valid_from=served.valid_to,
    )

    ingest(
        [
            event(slug, "label", label="cat", request_id="r1"),
            event(slug, "label", label="dog", request_id="r1"),
        ]
    )

    rollup = QualityRollup.objects.get(kind="label")
    assert rollup.model_version_id == served.model_version_id
    assert (rollup.count, rollup.labelled, rollup.correct) == (2, 2, 1)


def test_label_outside_the_lookback_window_is_not_judged(ingest, served):
    slug = served.deployment.application.slug
    ingest(
        [
            event(
                slug,
                "prediction",
                prediction="cat",
                request_id="r2",
                occurred_at=(timezone.now() - timedelta(days=16)).isoformat(),
            )
        ]
    )

    ingest([event(slug, "label", label="cat", request_id="r2")])

    rollup = QualityRollup.objects.get(kind="label")
    assert (rollup.labelled, rollup.correct) == (0, 0)


def test_label_joins_a_prediction_from_the_same_batch(ingest, app_slug):
    ingest(
        [
            event(app_slug, "prediction", prediction=1, request_id="r3"),
            event(app_slug, "label", label="1", request_id="r3"),
        ]
    )

    rollup = QualityRollup.objects.get(kind="label")
    assert (rollup.labelled, rollup.correct) == (1, 1)


def test_ingest_batch_states_are_lowercase_choices():
    assert IngestBatch.State.values == ["pending", "processing", "done", "failed"]


def test_ingest_keeps_awkward_text_intact(ingest, app_slug):
    awkward = 'tab\there, new\nline, back\\slash, "quotes", émoji 🚀'
    one = event(
        app_slug, request_id=awkward[:128], segment="a\\b\tc", payload={"note": awkward, "n": 1.5}
    )

    batch = ingest([one])

    stored = FeedbackEvent.objects.get()
    assert batch.accepted == 1
    assert (stored.request_id, stored.segment) == (awkward[:128], "a\\b\tc")
    assert stored.payload == {"note": awkward, "n": 1.5}


def test_an_event_with_several_faults_counts_as_one_rejected(ingest, app_slug):
    batch = ingest([event(app_slug), {"kind": "nope"}])

    assert (batch.total, batch.accepted, batch.rejected) == (2, 1, 1)
    assert {e["field"] for e in batch.errors} >= {"event_id", "occurred_at", "kind"}


@needs_postgres
def test_submissions_are_stored_with_lz4_where_postgresql_has_it():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"
        )
        if not cursor.fetchone()[0]:
            pytest.skip("this PostgreSQL has no lz4")
        cursor.execute(
            "SELECT attcompression FROM pg_attribute "
            "WHERE attrelid = 'feedback_ingestbatch'::regclass AND attname = 'raw'"
        )
        assert cursor.fetchone()[0] == "l"


@needs_postgres
def test_the_batch_insert_is_a_statement_prepared_once_per_connection(app_slug):
    for _ in range(2):
        submit_batch(actor=Actor.system("tests"), raw=orjson.dumps([event(app_slug)]))

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_prepared_statements "
            "WHERE statement LIKE 'INSERT INTO feedback_ingestbatch %%'"
        )
        assert cursor.fetchone()[0] == 1
    assert IngestBatch.objects.count() == 2


def test_a_batch_mixing_stored_and_new_events_keeps_exactly_the_new_ones(ingest, app_slug):
    stored = [event(app_slug, "click", value=1.0) for _ in range(2)]
    ingest(stored)
    fresh = [event(app_slug, "click", value=5.0) for _ in range(3)]

    batch = ingest([stored[0], *fresh, stored[1]])  # the fast COPY is refused: row by row

    assert (batch.accepted, batch.duplicate, batch.rejected) == (3, 2, 0)
    assert FeedbackEvent.objects.count() == 5
    assert _rollup_counts() == [("click", 5, 17.0, 77.0)]


@needs_postgres
def test_occurred_at_is_indexed_with_brin_on_postgresql():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT am.amname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_am am ON am.oid = c.relam "
            "WHERE i.indrelid = 'feedback_feedbackevent'::regclass "
            "AND pg_get_indexdef(i.indexrelid) LIKE '%(occurred_at)'"
        )
        assert [row[0] for row in cursor.fetchall()] == ["brin"]


def test_a_csv_payload_nested_too_deep_to_decode_is_rejected_alone(ingest_batch_factory, app_slug):
    ok, deep = event(app_slug), event(app_slug)
    nested = "[" * 5000 + "]" * 5000  # deeper than Python's json module goes
    body = "event_id,occurred_at,application,kind,payload\n" + "".join(
        f"{e['event_id']},{e['occurred_at']},{app_slug},click,{payload}\n"
        for e, payload in ((ok, ""), (deep, nested))
    )
    batch = ingest_batch_factory(raw=body.encode(), format="csv")

    ingest_feedback_batch(batch_id=batch.pk)

    batch.refresh_from_db()
    assert (batch.state, batch.accepted, batch.rejected) == ("done", 1, 1)
    assert (batch.errors[0]["index"], batch.errors[0]["field"]) == (1, "payload")
