"""Feedback fixtures: an application served by one version, and helpers to ingest."""

import json
from datetime import timedelta

import pytest
from django.utils import timezone
from pytest_factoryboy import register

from feedback.services import ingest_feedback_batch
from tests.factories import feedback as ff

register(ff.IngestBatchFactory)
register(ff.FeedbackSourceFactory)
register(ff.FeedbackReportFactory)


@pytest.fixture
def served(traffic_allocation_factory):
    """An application whose production deployment has served one version for 20 days."""
    return traffic_allocation_factory(valid_from=timezone.now() - timedelta(days=20))


@pytest.fixture
def app_slug(served):
    return served.deployment.application.slug


@pytest.fixture
def ingest(ingest_batch_factory):
    """ingest(events) -> the batch, stored and expanded as the worker would."""

    def run(events, **batch_fields):
        batch = ingest_batch_factory(raw=json.dumps(events).encode(), **batch_fields)
        ingest_feedback_batch(batch_id=batch.pk)
        batch.refresh_from_db()
        return batch

    return run
