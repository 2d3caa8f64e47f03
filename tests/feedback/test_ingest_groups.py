"""A worker expands open batches a group at a time, woken by as few messages as possible."""

import json
from datetime import timedelta

import pytest
from django.core.cache import caches
from django.db import connection
from django.db.models import Sum
from django.utils import timezone

from feedback.models import FeedbackEvent, IngestBatch, QualityRollup
from feedback.services import (
    claim_batches,
    drain_open_batches,
    enqueue_batch,
)
from feedback.services import (
    ingest as ingest_service,
)
from tests.factories.feedback import event


def _stored(events, factory, **fields):
    return factory(raw=json.dumps(events).encode(), **fields)


def _outcome(batch):
    batch.refresh_from_db()
    return batch.state, batch.total, batch.accepted, batch.duplicate, batch.rejected


def test_claim_batches_takes_the_oldest_open_batches_up_to_the_limit(ingest_batch_factory):
    first, second, third = (ingest_batch_factory() for _ in range(3))
    ingest_batch_factory(state="done")

    ids, claimed_at = claim_batches(limit=2)

    assert ids == [first.pk, second.pk]
    assert set(IngestBatch.objects.filter(claimed_at=claimed_at).values_list("pk", flat=True)) == {
        first.pk,
        second.pk,
    }
    assert IngestBatch.objects.get(pk=third.pk).state == "pending"


def test_claim_batches_stops_at_the_byte_budget_but_takes_at_least_one(ingest_batch_factory):
    big = ingest_batch_factory(raw=b"[" + b" " * 3000 + b"]")
    ingest_batch_factory(raw=b"[]")

    ids, _ = claim_batches(max_bytes=1000)

    assert ids == [big.pk]


def test_claim_batches_skips_batches_a_live_worker_holds(ingest_batch_factory):
    ingest_batch_factory(state="processing", claimed_at=timezone.now(), attempts=1)
    stale = ingest_batch_factory(
        state="processing", claimed_at=timezone.now() - timedelta(hours=1), attempts=1
    )

    ids, _ = claim_batches()

    assert ids == [stale.pk]
    assert IngestBatch.objects.get(pk=stale.pk).attempts == 2


def test_drain_expands_every_open_batch_with_its_own_counts(ingest_batch_factory, app_slug):
    good = _stored([event(app_slug, "click", value=1.0) for _ in range(3)], ingest_batch_factory)
    mixed = _stored([event(app_slug), event(app_slug, kind="nonsense")], ingest_batch_factory)

    assert drain_open_batches() == 4

    assert _outcome(good) == ("done", 3, 3, 0, 0)
    assert _outcome(mixed) == ("done", 2, 1, 0, 1)
    assert IngestBatch.objects.get(pk=mixed.pk).errors[0]["field"] == "kind"
    assert QualityRollup.objects.aggregate(n=Sum("count"))["n"] == 4


def test_an_event_sent_in_two_batches_of_one_group_counts_once(ingest_batch_factory, app_slug):
    shared = event(app_slug, "click", value=5.0)
    first = _stored([shared, event(app_slug)], ingest_batch_factory)
    second = _stored([shared], ingest_batch_factory)

    drain_open_batches()

    assert _outcome(first) == ("done", 2, 2, 0, 0)
    assert _outcome(second) == ("done", 1, 0, 1, 0)
    assert FeedbackEvent.objects.count() == 2
    assert QualityRollup.objects.aggregate(n=Sum("count"), s=Sum("sum")) == {"n": 2, "s": 5.0}


def test_a_group_mixing_stored_and_new_events_keeps_exactly_the_new_ones(
    ingest, ingest_batch_factory, app_slug
):
    known = event(app_slug, "click", value=1.0)
    ingest([known])
    again = _stored([known, event(app_slug)], ingest_batch_factory)
    fresh = _stored([event(app_slug)], ingest_batch_factory)

    drain_open_batches()

    assert _outcome(again) == ("done", 2, 1, 1, 0)
    assert _outcome(fresh) == ("done", 1, 1, 0, 0)
    assert QualityRollup.objects.aggregate(n=Sum("count"))["n"] == 3


def test_a_label_joins_a_prediction_from_another_batch_of_its_group(ingest_batch_factory, app_slug):
    _stored([event(app_slug, "prediction", prediction=1, request_id="r9")], ingest_batch_factory)
    _stored([event(app_slug, "label", label=1, request_id="r9")], ingest_batch_factory)

    drain_open_batches()

    rollup = QualityRollup.objects.get(kind="label")
    assert (rollup.labelled, rollup.correct) == (1, 1)


@pytest.mark.parametrize("batches", [1, 8])
def test_a_group_takes_the_same_queries_whatever_its_size(
    ingest_batch_factory, app_slug, batches, django_assert_max_num_queries
):
    if connection.vendor != "postgresql":
        pytest.skip("elsewhere the events are inserted in chunks and batches marked one by one")
    for n in range(batches):
        labelled = event(app_slug, "label", label=1, request_id=f"r{n}")
        _stored([event(app_slug), labelled], ingest_batch_factory)

    with django_assert_max_num_queries(QUERIES_PER_GROUP):
        drain_open_batches()

    assert IngestBatch.objects.filter(state="done").count() == batches


# claim; lock and read; attribution; stored predictions; rollups; done; the empty claim; and
# the savepoints of the group's transaction (one in a test) and of the COPY (which itself is
# not logged), each set and released
QUERIES_PER_GROUP = 11


def test_a_batch_that_breaks_the_group_fails_alone(ingest_batch_factory, app_slug, monkeypatch):
    good = _stored([event(app_slug)], ingest_batch_factory)
    poison = _stored([event(app_slug, request_id="poison")], ingest_batch_factory)
    real = ingest_service.check_and_resolve_group

    def check(submissions, **kwargs):
        if any(b'"poison"' in raw for raw, _, _ in submissions):
            raise RuntimeError("validator bug")
        return real(submissions, **kwargs)

    monkeypatch.setattr(ingest_service, "check_and_resolve_group", check)

    with pytest.raises(RuntimeError):
        drain_open_batches()

    assert _outcome(good) == ("done", 1, 1, 0, 0)
    poison.refresh_from_db()
    assert (poison.state, poison.attempts, poison.claimed_at) == ("pending", 1, None)
    assert "validator bug" in poison.last_error


def test_drain_past_its_budget_hands_over_to_a_fresh_task(ingest_batch_factory, monkeypatch):
    for _ in range(3):
        ingest_batch_factory(raw=b"[]")
    monkeypatch.setattr(ingest_service, "claim_batches", _one_at_a_time(ingest_service))
    sent = []
    monkeypatch.setattr(ingest_service, "schedule_drain", lambda **kw: sent.append(kw))

    drain_open_batches(budget_s=0)

    assert IngestBatch.objects.filter(state="pending").count() == 2  # one group, then hand over
    assert sent == [{"force": True}]


def _one_at_a_time(module):
    real = module.claim_batches
    return lambda **kw: real(limit=1)


@pytest.fixture
def messages(monkeypatch):
    """The ingest tasks sent to the broker (apply_async replaced; the flag is real)."""
    from feedback import tasks

    sent = []
    monkeypatch.setattr(
        tasks.ingest_feedback_batch_task, "apply_async", lambda **kw: sent.append(kw)
    )
    caches["shared"].delete(ingest_service._drain_flag())
    yield sent
    caches["shared"].delete(ingest_service._drain_flag())


def test_one_message_wakes_the_worker_for_many_batches(messages):
    for _ in range(3):  # three batches committed
        enqueue_batch()

    assert len(messages) == 1


def test_a_task_drops_the_flag_before_it_looks_so_the_next_batch_wakes_it_again(messages, db):
    enqueue_batch()
    drain_open_batches()  # the worker runs the task (nothing is open)

    enqueue_batch()

    assert len(messages) == 2


def test_an_enqueue_the_broker_refuses_leaves_no_flag_behind(messages, monkeypatch):
    from feedback import tasks

    def refuse(**kw):
        raise ConnectionError("broker down")

    monkeypatch.setattr(tasks.ingest_feedback_batch_task, "apply_async", refuse)
    enqueue_batch()  # logged; the sweeper recovers the batch
    monkeypatch.setattr(
        tasks.ingest_feedback_batch_task, "apply_async", lambda **kw: messages.append(kw)
    )

    enqueue_batch()

    assert len(messages) == 1


@pytest.mark.parametrize(("time_limit", "budget"), [(100, 5.0), (8, 2.0), (2, 1.0)])
def test_a_task_hands_over_within_seconds_and_well_inside_its_time_limit(
    settings, time_limit, budget
):
    from feedback.constants import drain_budget_s

    settings.CELERY_TASK_TIME_LIMIT = time_limit

    assert drain_budget_s() == budget
