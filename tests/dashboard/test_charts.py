"""Figures are plain plotly.js dicts, embedded as escaped JSON that the browser can parse."""

import json
import re
from datetime import UTC, datetime, timedelta

from django.template.defaultfilters import json_script

from dashboard import charts

T0 = datetime(2026, 11, 20, tzinfo=UTC)


def _parse(script: str) -> dict:
    body = re.fullmatch(r'<script id="fig-x" type="application/json">(.*)</script>', script, re.S)
    assert body is not None
    return json.loads(body.group(1))


def test_figure_script_is_the_json_that_json_script_would_write():
    figure = charts.quality_figure(
        [charts.QualityPoint(T0 + timedelta(hours=h), "m v1", 0.9, 0.05, 0.01) for h in range(3)],
        [charts.Marker(T0, "rollout.paused", "r1")],
    )

    script = charts.figure_script(figure, "fig-x")

    assert _parse(script) == _parse(str(json_script(figure, "fig-x")))


def test_figure_script_escapes_a_label_that_would_close_the_script():
    figure = charts.sankey_figure(
        [charts.FlowLink("m</script><b>", "m v1", "app/prod", "app & co", 100, "control")]
    )

    script = charts.figure_script(figure, "fig-x")

    assert "</script><b>" not in script
    assert "& co" not in script
    assert _parse(script)["data"][0]["node"]["label"][0] == "m</script><b>"


def test_figure_script_writes_nan_as_null_for_json_parse():
    figure = charts.accuracy_figure([charts.OfflinePoint("v1", T0, float("nan"))], [])

    assert _parse(charts.figure_script(figure, "fig-x"))["data"][0]["y"] == [None]


def test_quality_figure_has_three_panels_per_version_and_an_event_trace():
    points = [
        charts.QualityPoint(T0 + timedelta(hours=h), version, 0.9, 0.05, None)
        for h in range(4)
        for version in ("m v1", "m v2")
    ]
    markers = [charts.Marker(T0 + timedelta(hours=2), "rollout.rolled_back", "r1 — slow")]

    figure = charts.quality_figure(points, markers)

    traces = [(t["name"], t["yaxis"]) for t in figure["data"]]
    assert traces == [
        ("m v1", "y"), ("m v1", "y2"), ("m v1", "y3"),
        ("m v2", "y"), ("m v2", "y2"), ("m v2", "y3"),
        ("events", "y3"),
    ]  # fmt: skip
    assert figure["data"][0]["x"][0] == T0.isoformat()
    assert figure["data"][2]["y"] == [None] * 4  # no bad-recommendation figure: a gap
    assert figure["layout"]["shapes"][0]["line"]["color"] == charts.EVENT_COLORS["rolled_back"]


def test_figure_script_writes_what_orjson_cannot_as_json_script_did():
    from decimal import Decimal

    figure = charts.accuracy_figure([charts.OfflinePoint("v1", T0, Decimal("0.91"))], [])

    assert _parse(charts.figure_script(figure, "fig-x"))["data"][0]["y"] == ["0.91"]


def test_figures_keep_the_template_a_plotly_figure_had():
    import plotly.graph_objects as go

    figure = charts.arms_figure(
        [charts.ArmFigure("conversion_rate", "baseline", 0.1, 0.09, 0.11, 900)]
    )

    assert figure["layout"]["template"] == go.Figure().to_plotly_json()["layout"]["template"]
