import json
import uuid
from datetime import timedelta

import factory
from django.utils import timezone

from feedback.models import FeedbackReport, FeedbackSource, IngestBatch
from tests.factories.registry import ApplicationFactory


def event(application: str, kind: str = "impression", **fields) -> dict:
    """One valid API event dict (JSON-ready)."""
    return {
        "event_id": str(uuid.uuid4()),
        "occurred_at": (timezone.now() - timedelta(minutes=5)).isoformat(),
        "application": application,
        "kind": kind,
        **fields,
    }


class IngestBatchFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = IngestBatch

    class Params:
        events = factory.LazyFunction(list)

    raw = factory.LazyAttribute(lambda b: json.dumps(b.events).encode())
    raw_size = factory.LazyAttribute(lambda b: len(b.raw))
    created_at = factory.LazyFunction(timezone.now)


class FeedbackSourceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = FeedbackSource

    application = factory.SubFactory(ApplicationFactory)
    name = factory.Sequence(lambda n: f"source-{n}")
    url = "http://127.0.0.1:9/events"
    interval = timedelta(minutes=5)


class FeedbackReportFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = FeedbackReport

    application = factory.SubFactory(ApplicationFactory)
    kind = FeedbackReport.Kind.BAD_RECOMMENDATION
    title = factory.Sequence(lambda n: f"Odd recommendations #{n}")
