from datetime import timedelta

import pytest
from django.utils import timezone

from feedback.models import QualityRollup
from feedback.selectors import online_accuracy_by_version, quality_by_version


@pytest.fixture
def rollup(traffic_allocation_factory):
    def make(alloc=None, kind="label", hours_ago=1, **counts):
        alloc = alloc or traffic_allocation_factory()
        hour = (timezone.now() - timedelta(hours=hours_ago)).replace(
            minute=0, second=0, microsecond=0
        )
        QualityRollup.objects.create(
            application_id=alloc.deployment.application_id,
            model_version_id=alloc.model_version_id,
            kind=kind,
            hour=hour,
            **counts,
        )
        return (alloc.deployment.application_id, alloc.model_version_id)

    return make


def test_online_accuracy_by_version_sums_the_window(rollup, traffic_allocation_factory):
    alloc = traffic_allocation_factory()
    pair = rollup(alloc, count=10, labelled=10, correct=9)
    rollup(alloc, hours_ago=2, count=10, labelled=10, correct=7)
    rollup(alloc, hours_ago=24 * 30, count=10, labelled=10, correct=0)  # outside the window

    assert online_accuracy_by_version([pair]) == {pair: pytest.approx(0.8)}


def test_online_accuracy_by_version_omits_versions_without_labels(rollup):
    pair = rollup(kind="impression", count=50)

    assert online_accuracy_by_version([pair]) == {}


def test_quality_rates_carry_wilson_intervals(rollup, traffic_allocation_factory):
    alloc = traffic_allocation_factory()
    pair = rollup(alloc, kind="impression", count=1000)
    rollup(alloc, kind="conversion", count=50)
    rollup(alloc, kind="bad_recommendation", count=10)

    quality = quality_by_version([pair])[pair]

    assert quality.conversion_rate.value == pytest.approx(0.05)
    low, high = quality.conversion_rate.interval
    assert low < 0.05 < high
    assert quality.bad_recommendation_rate.value == pytest.approx(0.01)
    assert quality.online_accuracy.value is None


@pytest.mark.parametrize("versions", [2, 20])
def test_online_accuracy_by_version_is_one_query(rollup, django_assert_num_queries, versions):
    pairs = [rollup(count=4, labelled=4, correct=3) for _ in range(versions)]

    with django_assert_num_queries(1):
        result = online_accuracy_by_version(pairs)

    assert len(result) == versions
