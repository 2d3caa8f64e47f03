"""The ingest throttle: a sliding-window counter, exact under concurrency, honest Retry-After."""

import threading
import uuid
from types import SimpleNamespace

import pytest
from django.core.cache import caches
from django.core.cache.backends.locmem import LocMemCache

from registry.throttling import SlidingWindowScopedRateThrottle, count_request

LIMIT = 4
PERIOD = 60
VIEW = SimpleNamespace(throttle_scope="test")


def _user():
    """A user no earlier run has counted (Redis keeps counters between runs)."""
    return SimpleNamespace(is_authenticated=True, pk=uuid.uuid4().hex)


@pytest.fixture(params=["default", "locmem"])
def cache(request):
    """The configured cache (Redis under `make test`) and the generic path (any cache)."""
    if request.param == "default":
        return caches["default"]
    return LocMemCache("throttle-test", {})


@pytest.fixture
def user_request():
    return SimpleNamespace(user=_user())


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock(1_800_000 * PERIOD)  # the start of a window


@pytest.fixture
def allow(cache, clock, user_request):
    """allow() -> (allowed, throttle) for one more request of the same user at clock.now."""

    def run(request=user_request):
        throttle = SlidingWindowScopedRateThrottle()
        throttle.THROTTLE_RATES = {"test": f"{LIMIT}/min"}
        throttle.cache, throttle.timer = cache, clock
        return throttle.allow_request(request, VIEW), throttle

    return run


def test_allows_the_limit_within_a_period_and_refuses_the_next(allow, clock):
    for _ in range(LIMIT):
        clock.now += 1
        assert allow()[0]

    allowed, throttle = allow()

    assert not allowed
    assert throttle.wait() > 0


def test_users_are_counted_apart(allow):
    for _ in range(LIMIT):
        allow()
    other = SimpleNamespace(user=_user())

    assert allow(other)[0]


def test_a_full_previous_window_still_weighs_early_in_the_next(allow, clock):
    for _ in range(LIMIT):
        allow()
    clock.now += PERIOD + 1  # just into the next window: most of the last one is in the period

    assert not allow()[0]


def test_the_previous_window_slides_out_of_the_period(allow, clock):
    for _ in range(LIMIT):
        allow()
    clock.now += PERIOD * 1.5  # halfway: half of the previous window's requests still count

    assert [allow()[0] for _ in range(LIMIT)] == [True, True, False, False]


def test_refused_requests_do_not_count(allow, clock):
    for _ in range(LIMIT):
        allow()
    for _ in range(10):
        assert not allow()[0]
    clock.now += PERIOD * 2  # the full window has slid out; only refusals happened since

    assert all(allow()[0] for _ in range(LIMIT))


@pytest.mark.parametrize("spent_before", [0, 2, LIMIT])
def test_retry_after_is_when_a_request_is_allowed_again(allow, clock, spent_before):
    clock.now += PERIOD * 0.25
    for _ in range(spent_before):  # the previous window's share
        allow()
    clock.now += PERIOD
    while allow()[0]:
        pass
    wait = allow()[1].wait()
    refused_at = clock.now

    clock.now = refused_at + wait * 0.95
    assert not allow()[0]
    clock.now = refused_at + wait + 0.01
    assert allow()[0]


def test_concurrent_requests_are_counted_exactly(allow, user_request):
    results = []
    start = threading.Barrier(20)

    def one():
        start.wait()
        results.append(allow(user_request)[0])

    threads = [threading.Thread(target=one) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert results.count(True) == LIMIT


def test_through_djangos_cache_proxy_redis_counts_in_one_round_trip(monkeypatch):
    from django.core.cache import cache as proxy  # what DRF's throttles hold

    configured = caches["default"]
    if not hasattr(configured, "incr_and_get"):
        pytest.skip("no Redis cache configured (the generic path is tested above)")
    calls = []
    monkeypatch.setattr(
        type(configured), "incr_and_get", lambda self, *args: calls.append(args) or (1, 0)
    )

    assert count_request(proxy, "now", "before", 10) == (1, 0)
    assert calls == [("now", "before", 10)]
