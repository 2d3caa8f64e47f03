import pytest
from pytest_factoryboy import register

from tests.factories import feedback as ff

register(ff.IngestBatchFactory)


@pytest.fixture(autouse=True)
def _no_metrics_cache(settings):
    # each test reads fresh figures; the cache itself has its own test
    settings.METRICS_CACHE_S = 0
