"""Plotly figures as pure functions of plain data (STYLE R19): no database access here.

A figure is the plain dict plotly.js takes ({"data": [...], "layout": {...}}), built here
directly: plotly's Figure objects validate and deep-copy every element, which cost more than
the rest of a page at fleet scale. Views pass `figure_script(fig, id)` to the template: a
`<script type="application/json">` escaped as `|json_script` escapes it; one static JS per
page draws it with Plotly.newPlot (no inline script: CSP).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

import orjson
import plotly.io as pio
from django.core.serializers.json import DjangoJSONEncoder
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

PALETTE = ("#4f46e5", "#0ea5a4", "#f59e0b", "#db2777", "#16a34a", "#0284c7", "#9333ea", "#64748b")
EVENT_COLORS = {
    "rolled_back": "#cf222e",
    "aborted": "#cf222e",
    "paused": "#9a6700",
    "promoted": "#1a7f37",
}
FONT = {"family": "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", "size": 12}


Figure = dict[str, Any]  # {"data": [trace, ...], "layout": {...}}, as plotly.js takes it


def _figure(data: list[dict[str, Any]], layout: dict[str, Any]) -> Figure:
    """A figure as plain dicts, without plotly's per-element validation and copies.

    Validation (and make_subplots / add_vline) cost 0.1-1.7 s per figure at fleet scale; the
    dicts below use only documented attributes, and the browser test draws every figure.
    The layout carries plotly.py's default template, as a go.Figure's JSON did, so the
    figures look as they always have (fonts, hover labels, automargins).
    """
    return {"data": data, "layout": {"template": _template(), **layout}}


@cache
def _template() -> dict[str, Any]:
    return pio.templates[pio.templates.default].to_plotly_json()


def _stack(rows: int, titles: Sequence[str] | None, gap: float = 0.08) -> dict[str, Any]:
    """Layout axes for `rows` panels stacked on one shared time axis (top to bottom)."""
    height = (1 - gap * (rows - 1)) / rows
    layout: dict[str, Any] = {"annotations": []}
    for i in range(rows):
        top = 1 - i * (height + gap)
        suffix = "" if i == 0 else str(i + 1)
        domain = [max(round(top - height, 4), 0), min(round(top, 4), 1)]
        layout[f"yaxis{suffix}"] = {"domain": domain, "anchor": "x"}
        if titles:
            layout["annotations"].append(
                {"text": titles[i], "x": 0.5, "xref": "paper", "y": top, "yref": "paper",
                 "yanchor": "bottom", "xanchor": "center", "showarrow": False,
                 "font": {"size": 13}}
            )  # fmt: skip
    layout["xaxis"] = {"anchor": f"y{rows if rows > 1 else ''}", "type": "date"}
    for i in range(1, rows):
        layout[f"xaxis{i + 1}"] = {"matches": "x", "showticklabels": False}
    return layout


AXIS = {"gridcolor": "#eef1f4", "linecolor": "#cfd4dc", "zeroline": False}


def _layout(height: int, **extra: Any) -> dict[str, Any]:
    """The house layout: transparent paper, light grid, legend top right."""
    layout: dict[str, Any] = {
        "height": height,
        "margin": {"l": 48, "r": 16, "t": 40, "b": 36},
        "font": FONT,
        "paper_bgcolor": "rgba(0,0,0,0)",
        "plot_bgcolor": "#ffffff",
        "legend": {"orientation": "h", "yanchor": "bottom", "y": 1.04, "xanchor": "right", "x": 1},
        "hovermode": "x unified",
        **extra,
    }
    for key, axis in list(layout.items()):
        if key.startswith(("xaxis", "yaxis")):
            layout[key] = {**AXIS, **axis}
    layout.setdefault("xaxis", dict(AXIS))
    layout.setdefault("yaxis", dict(AXIS))
    return layout


# what `|json_script` escapes, so no label can close the script element or open a comment
_SCRIPT_ESCAPES = ((b"&", b"\\u0026"), (b"<", b"\\u003C"), (b">", b"\\u003E"))


_ENCODER = DjangoJSONEncoder()  # what orjson leaves to it (Decimal, lazy strings), as before


def figure_script(fig: Figure, element_id: str) -> SafeString:
    """The figure as `<script id=… type="application/json">`, as `|json_script` writes it.

    orjson writes it about 10x faster than json.dumps (NaN becomes null, which JSON.parse
    accepts; json.dumps would write NaN, which it rejects).
    """
    raw = orjson.dumps(fig, default=_ENCODER.default)
    for char, escaped in _SCRIPT_ESCAPES:
        raw = raw.replace(char, escaped)
    return format_html(
        '<script id="{}" type="application/json">{}</script>', element_id, mark_safe(raw.decode())
    )


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


# --- Fleet map ---


@dataclass(frozen=True)
class FlowLink:
    """One serving edge: `version` feeds `deployment` of `application` at `weight` percent."""

    model: str
    version: str
    deployment: str
    application: str
    weight: int
    role: str


def sankey_figure(links: Sequence[FlowLink]) -> Figure:
    """Models → versions → deployments → applications; edge width is the traffic share.

    Shadow copies carry no live traffic; they get a hairline so they stay visible.
    """
    index: dict[tuple[str, str], int] = {}
    labels: list[str] = []
    colors: list[str] = []
    column_colors = {"m": "#4f46e5", "v": "#6366f1", "d": "#0ea5a4", "a": "#1b1f24"}

    def node(kind: str, key: str, label: str) -> int:
        if (kind, key) not in index:
            index[(kind, key)] = len(labels)
            labels.append(label)
            colors.append(column_colors[kind])
        return index[(kind, key)]

    src: list[int] = []
    dst: list[int] = []
    val: list[float] = []
    text: list[str] = []
    for link in links:
        share = max(link.weight, 0.5) / 100
        m = node("m", link.model, link.model)
        v = node("v", link.version, link.version)
        d = node("d", link.deployment, link.deployment)
        a = node("a", link.application, link.application)
        what = "shadow copy" if link.role == "shadow" else f"{link.weight}% ({link.role})"
        for s, t, label in ((m, v, link.version), (v, d, what), (d, a, link.application)):
            src.append(s)
            dst.append(t)
            val.append(share)
            text.append(label)
    trace = {
        "type": "sankey",
        "arrangement": "snap",
        "node": {"label": labels, "color": colors, "pad": 10, "thickness": 12,
                 "line": {"width": 0}},
        "link": {
            "source": src, "target": dst, "value": val, "customdata": text,
            "hovertemplate": "%{source.label} → %{target.label}<br>%{customdata}<extra></extra>",
            "color": "rgba(99, 102, 241, 0.22)",
        },
    }  # fmt: skip
    height = max(260, min(1400, 22 * max(len(labels) // 3, 1)))
    margin = {"l": 8, "r": 8, "t": 8, "b": 8}
    return _figure([trace], _layout(height, hovermode=False, margin=margin))


# --- Application ---


@dataclass(frozen=True)
class AllocationSpan:
    """A version's share of a deployment's traffic over [start, end) (end None: now)."""

    deployment: str
    version: str
    weight: int
    role: str
    start: datetime
    end: datetime | None


@dataclass(frozen=True)
class Marker:
    """A registry or rollout event drawn as a vertical line on a time axis."""

    at: datetime
    kind: str
    label: str


def _axis_ref(row: int) -> str:
    return "y" if row == 1 else f"y{row}"


def traffic_split_figure(spans: Sequence[AllocationSpan], *, now: datetime) -> Figure:
    """Stacked step areas: each version's live share of each deployment over time."""
    deployments = sorted({s.deployment for s in spans})
    versions = sorted({s.version for s in spans})
    rows = max(len(deployments), 1)
    layout = _stack(rows, deployments if rows > 1 else None)
    data = []
    for row, dep in enumerate(deployments, start=1):
        mine = [s for s in spans if s.deployment == dep]
        instants = sorted({s.start for s in mine} | {s.end or now for s in mine})
        for version in versions:
            own = [s for s in mine if s.version == version]
            if not own:
                continue
            ys = [
                next((s.weight for s in own if s.start <= t and (s.end or now) > t), 0)
                for t in instants
            ]
            data.append(
                {"type": "scatter", "x": [t.isoformat() for t in instants], "y": ys,
                 "name": version,
                 "legendgroup": version, "showlegend": row == 1, "mode": "lines",
                 "line": {"shape": "hv", "width": 1, "color": color(versions.index(version))},
                 "stackgroup": f"d{row}", "xaxis": "x", "yaxis": _axis_ref(row),
                 "hovertemplate": f"{version}: %{{y}}%<extra></extra>"}
            )  # fmt: skip
        layout[f"yaxis{'' if row == 1 else row}"].update(range=[0, 100], ticksuffix="%")
    return _figure(data, _layout(120 + 150 * rows, **layout))


def version_timeline_figure(spans: Sequence[AllocationSpan], *, now: datetime) -> Figure:
    """When each version served (with live traffic or as a shadow), one bar per stint."""
    versions = sorted({s.version for s in spans})
    data = []
    for i, version in enumerate(versions):
        own = [s for s in spans if s.version == version]
        data.append(
            {
                "type": "bar",
                "orientation": "h",
                "y": [f"{s.version} · {s.deployment}" for s in own],
                "x": [((s.end or now) - s.start).total_seconds() * 1000 for s in own],
                "base": [s.start.isoformat() for s in own],
                "name": version,
                "marker": {"color": color(i)},
                "customdata": [
                    [s.role, s.weight, "now" if s.end is None else s.end.strftime("%Y-%m-%d %H:%M")]
                    for s in own
                ],
                "hovertemplate": "%{y}<br>%{customdata[0]} %{customdata[1]}%<br>"
                "%{base|%Y-%m-%d %H:%M} → %{customdata[2]}<extra></extra>",
            }
        )
    rows = len({(s.version, s.deployment) for s in spans})
    layout = _layout(
        100 + 26 * max(rows, 2),
        barmode="overlay",
        hovermode="closest",
        showlegend=False,
        xaxis={"type": "date"},
        yaxis={"autorange": "reversed"},
    )
    return _figure(data, layout)


@dataclass(frozen=True)
class QualityPoint:
    """One hour of one version's online quality (None: nothing counted that hour)."""

    hour: datetime
    version: str
    accuracy: float | None
    conversion_rate: float | None
    bad_rate: float | None


QUALITY_PANELS = (
    ("accuracy", "Online accuracy"),
    ("conversion_rate", "Conversion rate"),
    ("bad_rate", "Bad-recommendation rate"),
)


def quality_figure(points: Sequence[QualityPoint], markers: Sequence[Marker]) -> Figure:
    """Hourly quality per version, with registry and rollout events on the same time axis."""
    layout = _stack(3, [title for _, title in QUALITY_PANELS], gap=0.09)
    versions = sorted({p.version for p in points})
    data = []
    for i, version in enumerate(versions):
        own = [p for p in points if p.version == version]
        hours = [p.hour.isoformat() for p in own]  # strings: plotly deep-copies data
        for row, (attr, _) in enumerate(QUALITY_PANELS, start=1):
            data.append(
                {"type": "scatter", "x": hours, "y": [getattr(p, attr) for p in own],
                 "name": version, "legendgroup": version, "showlegend": row == 1,
                 "mode": "lines", "connectgaps": False, "xaxis": "x", "yaxis": _axis_ref(row),
                 "line": {"width": 1.6, "color": color(i)},
                 "hovertemplate": f"{version}: %{{y:.2%}}<extra></extra>"}
            )  # fmt: skip
    for row in (1, 2, 3):
        layout[f"yaxis{'' if row == 1 else row}"].update(tickformat=".1%", rangemode="tozero")
    layout["shapes"] = [
        {"type": "line", "xref": "x", "yref": "paper", "x0": m.at.isoformat(),
         "x1": m.at.isoformat(), "y0": 0, "y1": 1,
         "line": {"width": 1, "dash": "dot", "color": _tint(m)}}
        for m in markers
    ]  # fmt: skip
    if markers:
        data.append(
            {"type": "scatter", "x": [m.at.isoformat() for m in markers], "y": [0] * len(markers),
             "xaxis": "x", "yaxis": "y3", "mode": "markers", "name": "events",
             "marker": {"symbol": "triangle-up", "size": 9, "color": [_tint(m) for m in markers]},
             "text": [f"{m.kind}: {m.label}" for m in markers],
             "hovertemplate": "%{text}<extra></extra>"}
        )  # fmt: skip
    return _figure(data, _layout(620, **layout))


def _tint(m: Marker) -> str:
    return EVENT_COLORS.get(m.kind.rsplit(".", 1)[-1], "#64748b")


# --- Model ---


@dataclass(frozen=True)
class OfflinePoint:
    version: str
    trained_at: datetime
    accuracy: float | None


@dataclass(frozen=True)
class OnlinePoint:
    hour: datetime
    version: str
    accuracy: float


def accuracy_figure(offline: Sequence[OfflinePoint], online: Sequence[OnlinePoint]) -> Figure:
    """Offline accuracy at training time per version, and online accuracy per hour."""
    with_acc = [p for p in offline if p.accuracy is not None]
    data = [
        {"type": "scatter", "x": [p.trained_at.isoformat() for p in with_acc],
         "y": [p.accuracy for p in with_acc], "text": [p.version for p in with_acc],
         "mode": "markers+text", "textposition": "top center",
         "marker": {"size": 9, "symbol": "diamond", "color": "#1b1f24"},
         "name": "offline (at training)",
         "hovertemplate": "%{text} offline: %{y:.2%}<extra></extra>"}
    ]  # fmt: skip
    versions = sorted({p.version for p in online})
    for i, version in enumerate(versions):
        own = [p for p in online if p.version == version]
        data.append(
            {"type": "scatter", "x": [p.hour.isoformat() for p in own],
             "y": [p.accuracy for p in own],
             "mode": "lines", "name": f"{version} online",
             "line": {"width": 1.6, "color": color(i)},
             "hovertemplate": f"{version} online: %{{y:.2%}}<extra></extra>"}
        )  # fmt: skip
    return _figure(data, _layout(340, yaxis={"tickformat": ".0%"}, xaxis={"type": "date"}))


# --- Rollout ---


@dataclass(frozen=True)
class ArmFigure:
    """One metric of one arm: point estimate with its 95 % interval."""

    metric: str
    arm: str
    value: float | None
    low: float | None
    high: float | None
    n: int


ARM_COLORS = {"baseline": "#4f46e5", "candidate": "#f59e0b"}


def arms_figure(points: Sequence[ArmFigure]) -> Figure:
    """Per metric, baseline and candidate side by side with 95 % error bars."""
    metrics = list(dict.fromkeys(p.metric for p in points))
    cols, gap = max(len(metrics), 1), 0.06
    width = (1 - gap * (cols - 1)) / cols
    layout: dict[str, Any] = {"annotations": []}
    data = []
    for col, metric in enumerate(metrics, start=1):
        suffix = "" if col == 1 else str(col)
        left = (col - 1) * (width + gap)
        domain = [max(round(left, 4), 0), min(round(left + width, 4), 1)]
        layout[f"xaxis{suffix}"] = {"domain": domain, "anchor": f"y{suffix}"}
        layout[f"yaxis{suffix}"] = {"anchor": f"x{suffix}", "tickformat": ".1%"}
        layout["annotations"].append(
            {"text": metric.replace("_", " "), "x": left + width / 2, "xref": "paper", "y": 1,
             "yref": "paper", "yanchor": "bottom", "xanchor": "center", "showarrow": False,
             "font": {"size": 13}}
        )  # fmt: skip
        for arm in ("baseline", "candidate"):
            p = next((p for p in points if p.metric == metric and p.arm == arm), None)
            if p is None or p.value is None:
                continue
            data.append(
                {"type": "scatter", "x": [arm], "y": [p.value], "mode": "markers", "name": arm,
                 "legendgroup": arm, "showlegend": col == 1, "xaxis": f"x{suffix}",
                 "yaxis": f"y{suffix}", "marker": {"size": 10, "color": ARM_COLORS[arm]},
                 "error_y": {"type": "data", "symmetric": False,
                             "array": [(p.high - p.value) if p.high is not None else 0],
                             "arrayminus": [(p.value - p.low) if p.low is not None else 0],
                             "thickness": 1.6, "width": 8},
                 "hovertemplate": f"{arm}: %{{y:.3%}} (n={p.n:,})<extra></extra>"}
            )  # fmt: skip
    legend = {"orientation": "h", "yanchor": "bottom", "y": 1.1, "xanchor": "right", "x": 1}
    margin = {"l": 48, "r": 16, "t": 64, "b": 36}
    return _figure(data, _layout(320, hovermode="closest", legend=legend, margin=margin, **layout))
