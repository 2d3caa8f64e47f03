"""Plotly figures as pure functions of plain data (STYLE R19): no database access here.

Views pass `figure_json(fig)` to the template, which embeds it with `|json_script` so labels
are escaped; one static JS per page draws it with Plotly.newPlot (no inline script: CSP).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

PALETTE = ("#4f46e5", "#0ea5a4", "#f59e0b", "#db2777", "#16a34a", "#0284c7", "#9333ea", "#64748b")
EVENT_COLORS = {
    "rolled_back": "#cf222e",
    "aborted": "#cf222e",
    "paused": "#9a6700",
    "promoted": "#1a7f37",
}
FONT = {"family": "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", "size": 12}


def _layout(fig: go.Figure, *, height: int, **extra: Any) -> go.Figure:
    layout: dict[str, Any] = {
        "height": height,
        "margin": {"l": 48, "r": 16, "t": 40, "b": 36},
        "font": FONT,
        "paper_bgcolor": "rgba(0,0,0,0)",
        "plot_bgcolor": "#ffffff",
        "legend": {"orientation": "h", "yanchor": "bottom", "y": 1.04, "xanchor": "right", "x": 1},
        "hovermode": "x unified",
    }
    fig.update_layout(**{**layout, **extra})
    fig.update_xaxes(gridcolor="#eef1f4", linecolor="#cfd4dc")
    fig.update_yaxes(gridcolor="#eef1f4", linecolor="#cfd4dc", zeroline=False)
    return fig


def figure_json(fig: go.Figure) -> dict[str, Any]:
    """The figure as plain JSON data for `|json_script`."""
    return json.loads(fig.to_json())


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


def sankey_figure(links: Sequence[FlowLink]) -> go.Figure:
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
    fig = go.Figure(
        go.Sankey(
            arrangement="snap",
            node={
                "label": labels,
                "color": colors,
                "pad": 10,
                "thickness": 12,
                "line": {"width": 0},
            },
            link={
                "source": src,
                "target": dst,
                "value": val,
                "customdata": text,
                "hovertemplate": "%{source.label} → %{target.label}<br>%{customdata}"
                "<extra></extra>",
                "color": "rgba(99, 102, 241, 0.22)",
            },
        )
    )
    height = max(260, min(1400, 22 * max(len(labels) // 3, 1)))
    return _layout(fig, height=height, hovermode=False, margin={"l": 8, "r": 8, "t": 8, "b": 8})


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


def traffic_split_figure(spans: Sequence[AllocationSpan], *, now: datetime) -> go.Figure:
    """Stacked step areas: each version's live share of each deployment over time."""
    deployments = sorted({s.deployment for s in spans})
    fig = make_subplots(
        rows=max(len(deployments), 1),
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.08,
        subplot_titles=deployments if len(deployments) > 1 else None,
    )
    versions = sorted({s.version for s in spans})
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
            fig.add_trace(
                go.Scatter(
                    x=instants,
                    y=ys,
                    name=version,
                    legendgroup=version,
                    showlegend=row == 1,
                    mode="lines",
                    line={"shape": "hv", "width": 1, "color": color(versions.index(version))},
                    stackgroup=f"d{row}",
                    hovertemplate=f"{version}: %{{y}}%<extra></extra>",
                ),
                row=row,
                col=1,
            )
    fig.update_yaxes(range=[0, 100], ticksuffix="%")
    return _layout(fig, height=120 + 150 * max(len(deployments), 1))


def version_timeline_figure(spans: Sequence[AllocationSpan], *, now: datetime) -> go.Figure:
    """When each version served (with live traffic or as a shadow), one bar per stint."""
    versions = sorted({s.version for s in spans})
    fig = go.Figure()
    for i, version in enumerate(versions):
        own = [s for s in spans if s.version == version]
        fig.add_trace(
            go.Bar(
                y=[f"{s.version} · {s.deployment}" for s in own],
                x=[((s.end or now) - s.start).total_seconds() * 1000 for s in own],
                base=[s.start.isoformat() for s in own],
                orientation="h",
                name=version,
                marker={"color": color(i)},
                customdata=[
                    [s.role, s.weight, "now" if s.end is None else s.end.strftime("%Y-%m-%d %H:%M")]
                    for s in own
                ],
                hovertemplate="%{y}<br>%{customdata[0]} %{customdata[1]}%<br>"
                "%{base|%Y-%m-%d %H:%M} → %{customdata[2]}<extra></extra>",
            )
        )
    fig.update_xaxes(type="date")
    fig.update_yaxes(autorange="reversed")
    rows = len({(s.version, s.deployment) for s in spans})
    return _layout(
        fig,
        height=100 + 26 * max(rows, 2),
        barmode="overlay",
        hovermode="closest",
        showlegend=False,
    )


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


def quality_figure(points: Sequence[QualityPoint], markers: Sequence[Marker]) -> go.Figure:
    """Hourly quality per version, with registry and rollout events on the same time axis."""
    fig = make_subplots(
        rows=3,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.09,
        subplot_titles=[title for _, title in QUALITY_PANELS],
    )
    versions = sorted({p.version for p in points})
    for i, version in enumerate(versions):
        own = [p for p in points if p.version == version]
        for row, (attr, _) in enumerate(QUALITY_PANELS, start=1):
            fig.add_trace(
                go.Scatter(
                    x=[p.hour for p in own],
                    y=[getattr(p, attr) for p in own],
                    name=version,
                    legendgroup=version,
                    showlegend=row == 1,
                    mode="lines",
                    connectgaps=False,
                    line={"width": 1.6, "color": color(i)},
                    hovertemplate=f"{version}: %{{y:.2%}}<extra></extra>",
                ),
                row=row,
                col=1,
            )
    fig.update_yaxes(tickformat=".1%", rangemode="tozero")
    _add_markers(fig, markers, rows=3)
    return _layout(fig, height=620)


def _add_markers(fig: go.Figure, markers: Sequence[Marker], *, rows: int) -> None:
    """Dashed vertical lines across every panel, with hover labels on a thin marker trace."""
    for m in markers:
        verb = m.kind.rsplit(".", 1)[-1]
        tint = EVENT_COLORS.get(verb, "#64748b")
        fig.add_vline(x=m.at, line={"width": 1, "dash": "dot", "color": tint}, row="all", col=1)
    if markers:
        fig.add_trace(
            go.Scatter(
                x=[m.at for m in markers],
                y=[1.0] * len(markers),
                yaxis="y",
                mode="markers",
                marker={
                    "symbol": "triangle-down",
                    "size": 9,
                    "color": [
                        EVENT_COLORS.get(m.kind.rsplit(".", 1)[-1], "#64748b") for m in markers
                    ],
                },
                name="events",
                text=[f"{m.kind}: {m.label}" for m in markers],
                hovertemplate="%{text}<extra></extra>",
            ),
            row=1,
            col=1,
        )


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


def accuracy_figure(offline: Sequence[OfflinePoint], online: Sequence[OnlinePoint]) -> go.Figure:
    """Offline accuracy at training time per version, and online accuracy per hour."""
    fig = go.Figure()
    with_acc = [p for p in offline if p.accuracy is not None]
    fig.add_trace(
        go.Scatter(
            x=[p.trained_at for p in with_acc],
            y=[p.accuracy for p in with_acc],
            text=[p.version for p in with_acc],
            mode="markers+text",
            textposition="top center",
            marker={"size": 9, "symbol": "diamond", "color": "#1b1f24"},
            name="offline (at training)",
            hovertemplate="%{text} offline: %{y:.2%}<extra></extra>",
        )
    )
    versions = sorted({p.version for p in online})
    for i, version in enumerate(versions):
        own = [p for p in online if p.version == version]
        fig.add_trace(
            go.Scatter(
                x=[p.hour for p in own],
                y=[p.accuracy for p in own],
                mode="lines",
                name=f"{version} online",
                line={"width": 1.6, "color": color(i)},
                hovertemplate=f"{version} online: %{{y:.2%}}<extra></extra>",
            )
        )
    fig.update_yaxes(tickformat=".0%")
    return _layout(fig, height=340)


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


def arms_figure(points: Sequence[ArmFigure]) -> go.Figure:
    """Per metric, baseline and candidate side by side with 95 % error bars."""
    metrics = list(dict.fromkeys(p.metric for p in points))
    fig = make_subplots(
        rows=1,
        cols=max(len(metrics), 1),
        subplot_titles=[m.replace("_", " ") for m in metrics] or None,
        horizontal_spacing=0.06,
    )
    arm_colors = {"baseline": "#4f46e5", "candidate": "#f59e0b"}
    for col, metric in enumerate(metrics, start=1):
        for arm in ("baseline", "candidate"):
            p = next((p for p in points if p.metric == metric and p.arm == arm), None)
            if p is None or p.value is None:
                continue
            fig.add_trace(
                go.Scatter(
                    x=[arm],
                    y=[p.value],
                    mode="markers",
                    name=arm,
                    legendgroup=arm,
                    showlegend=col == 1,
                    marker={"size": 10, "color": arm_colors[arm]},
                    error_y={
                        "type": "data",
                        "symmetric": False,
                        "array": [(p.high - p.value) if p.high is not None else 0],
                        "arrayminus": [(p.value - p.low) if p.low is not None else 0],
                        "thickness": 1.6,
                        "width": 8,
                    },
                    hovertemplate=f"{arm}: %{{y:.3%}} (n={p.n:,})<extra></extra>",
                ),
                row=1,
                col=col,
            )
    fig.update_yaxes(tickformat=".1%")
    return _layout(fig, height=300, hovermode="closest")
