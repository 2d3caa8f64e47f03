import pytest
from django.conf import settings

from dashboard.celery import app
from feedback import tasks
from feedback.models import IngestBatch
from tests.factories.feedback import event

FEEDBACK_JOBS = [
    "requeue-stale-ingest-batches",
    "purge-old-feedback-events",
    "poll-due-feedback-sources",
]


@pytest.mark.parametrize("name", FEEDBACK_JOBS)
def test_beat_entry_names_a_registered_task_and_expires_before_the_next_run(name):
    entry = settings.CELERY_BEAT_SCHEDULE[name]

    app.loader.import_default_modules()
    assert entry["task"] in app.tasks
    assert 0 < entry["options"]["expires"] < entry["schedule"]


def test_ingest_tasks_are_routed_to_the_ingest_queue():
    route = app.amqp.router.route({}, tasks.ingest_feedback_batch_task.name)

    assert route["queue"].name == "ingest"


def test_ingest_feedback_batch_task_runs_the_service(ingest_batch_factory, app_slug):
    import json

    batch = ingest_batch_factory(raw=json.dumps([event(app_slug)]).encode())

    result = tasks.ingest_feedback_batch_task.apply(args=[batch.pk])

    assert result.get() == 1
    assert IngestBatch.objects.get(pk=batch.pk).state == "done"
