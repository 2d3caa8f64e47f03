from datetime import timedelta

import pytest
from django.utils import timezone

from feedback.models import FeedbackEvent, IngestBatch, QualityRollup
from feedback.services import purge_old_events, purge_old_submissions, requeue_stale_batches
from tests.factories.feedback import event


@pytest.fixture
def sent(monkeypatch):
    """The wake-ups the sweeper sends (each with force: a lost message may leave the flag)."""
    calls = []
    monkeypatch.setattr(
        "feedback.services.maintenance.schedule_drain", lambda **kw: calls.append(kw)
    )
    return calls


def test_requeue_stale_batches_finds_old_pending_and_dead_claims(ingest_batch_factory, sent):
    long_ago = timezone.now() - timedelta(hours=1)
    old_pending = ingest_batch_factory(created_at=long_ago)
    dead_claim = ingest_batch_factory(state="processing", claimed_at=long_ago, attempts=1)
    ingest_batch_factory()  # fresh: its message is surely still on its way
    ingest_batch_factory(state="processing", claimed_at=timezone.now(), attempts=1)
    ingest_batch_factory(state="done", created_at=long_ago)

    found = requeue_stale_batches()

    assert sorted(found) == sorted([old_pending.pk, dead_claim.pk])
    assert sent == [{"force": True}]  # one task expands every open batch


def test_requeue_stale_batches_sends_nothing_when_nothing_is_stale(ingest_batch_factory, sent):
    ingest_batch_factory()

    assert requeue_stale_batches() == []
    assert sent == []


def test_requeue_stale_batches_fails_a_batch_out_of_attempts(ingest_batch_factory, sent):
    long_ago = timezone.now() - timedelta(hours=1)
    batch = ingest_batch_factory(state="processing", claimed_at=long_ago, attempts=5)

    requeue_stale_batches()

    batch.refresh_from_db()
    assert batch.state == IngestBatch.State.FAILED
    assert sent == []


def test_purge_old_events_drops_raw_events_and_keeps_rollups(ingest, app_slug, settings):
    old = (timezone.now() - timedelta(days=10)).isoformat()
    ingest([event(app_slug, occurred_at=old), event(app_slug)])
    settings.FEEDBACK_RETENTION_DAYS = 7

    deleted = purge_old_events()

    assert deleted == 1
    assert FeedbackEvent.objects.count() == 1
    assert sum(QualityRollup.objects.values_list("count", flat=True)) == 2


def test_purge_old_submissions_empties_finished_batches_past_retention(
    ingest_batch_factory, settings
):
    settings.FEEDBACK_RETENTION_DAYS = 7
    long_ago = timezone.now() - timedelta(days=8)
    done = ingest_batch_factory(state="done", created_at=long_ago, raw=b"[1]", raw_sha256="abc")
    failed = ingest_batch_factory(state="failed", created_at=long_ago, raw=b"[2]")

    assert purge_old_submissions(chunk=1) == 2

    for batch in (done, failed):
        batch.refresh_from_db()
        assert bytes(batch.raw) == b""
    assert (done.raw_size, done.raw_sha256, done.state) == (3, "abc", "done")


def test_purge_old_submissions_keeps_recent_and_open_batches(ingest_batch_factory, settings):
    settings.FEEDBACK_RETENTION_DAYS = 7
    long_ago = timezone.now() - timedelta(days=8)
    kept = [
        ingest_batch_factory(state="done", raw=b"[1]"),  # within retention
        ingest_batch_factory(state="pending", created_at=long_ago, raw=b"[2]"),
        ingest_batch_factory(state="processing", created_at=long_ago, raw=b"[3]"),
    ]

    assert purge_old_submissions() == 0

    assert [bytes(IngestBatch.objects.get(pk=b.pk).raw) for b in kept] == [b"[1]", b"[2]", b"[3]"]


def test_the_purge_task_empties_old_submissions_and_drops_old_events(ingest, app_slug, settings):
    from feedback.tasks import purge_old_feedback_events_task

    old = (timezone.now() - timedelta(days=10)).isoformat()
    ingest([event(app_slug, occurred_at=old)])
    IngestBatch.objects.update(created_at=timezone.now() - timedelta(days=10))
    settings.FEEDBACK_RETENTION_DAYS = 7

    assert purge_old_feedback_events_task() == 1

    assert bytes(IngestBatch.objects.get().raw) == b""
    assert FeedbackEvent.objects.count() == 0


def test_failing_expansion_gives_the_batch_back_for_a_retry(ingest_batch_factory, monkeypatch):
    from feedback.services import ingest_feedback_batch

    batch = ingest_batch_factory(raw=b"[]")

    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("feedback.services.ingest.check_and_resolve_group", boom)

    with pytest.raises(RuntimeError):
        ingest_feedback_batch(batch_id=batch.pk)

    batch.refresh_from_db()
    assert (batch.state, batch.attempts) == ("pending", 1)
    assert "disk on fire" in batch.last_error
