from datetime import timedelta

import pytest
from django.utils import timezone

from dashboard.templatetags.formatting import bytes_, duration, label, meter, pct, since


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0, "0 s"),
        (45, "45 s"),
        (3600, "1 h"),
        (6 * 3600 + 8, "6 h"),
        (3 * 3600 + 12 * 60 + 5, "3 h 12 m"),
        (2 * 86400 + 3 * 3600, "2 d 3 h"),
        (timedelta(hours=24), "1 d"),
        (-90, "-1 m 30 s"),
        (None, "—"),
    ],
)
def test_duration_shows_the_two_largest_units(value, text):
    assert duration(value) == text


def test_since_shows_relative_time_with_the_absolute_moment_on_hover():
    moment = timezone.now() - timedelta(hours=3, minutes=5)

    html = since(moment)

    assert ">3 h ago</time>" in html
    assert f'title="{moment:%Y-%m-%d %H:%M:%S} UTC"' in html


def test_since_handles_future_and_missing_moments():
    assert ">in 2 d</time>" in since(timezone.now() + timedelta(days=2, hours=1))
    assert since(None) == "—"


@pytest.mark.parametrize(
    ("value", "text"),
    [(512, "512 B"), (40_000_000, "38.1 MiB"), (1_500_000_000, "1.4 GiB"), (None, "—")],
)
def test_bytes_uses_binary_units(value, text):
    assert bytes_(value) == text


def test_pct_formats_fractions_and_missing_values():
    assert pct(0.91346) == "91.3%"
    assert pct(0.5, 0) == "50%"
    assert pct(None) == "—"


def test_meter_clamps_ratios_to_a_bar_width():
    assert (meter(0.42), meter(1.7), meter(None)) == (42, 100, 0)


def test_label_turns_choice_values_into_words():
    assert (label("ab_test"), label("rolled_back"), label("canary")) == (
        "A/B test",
        "rolled back",
        "canary",
    )
