"""Formatting filters for the pages; they only format values (STYLE R17).

{% load formatting %}
{{ version.trained_at|since }}   -> <time datetime="…" title="2026-11-26 09:14 UTC">3 h ago</time>
{{ age_seconds|duration }}       -> 2 d 3 h
{{ size_bytes|bytes }}           -> 1.4 GiB
{{ accuracy|pct }}               -> 91.3%
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django import template
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

register = template.Library()

EMPTY = "—"
_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


def _seconds(value: object) -> float | None:
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


@register.filter
def duration(value: object) -> str:
    """Seconds or a timedelta as its two largest units: '2 d 3 h', '45 m', '12 s'."""
    seconds = _seconds(value)
    if seconds is None:
        return EMPTY
    sign, total = ("-" if seconds < 0 else ""), int(abs(seconds))
    counts = []
    for unit, size in _UNITS:
        count, total = divmod(total, size)
        counts.append((count, unit))
    first = next((i for i, (count, _) in enumerate(counts) if count), len(counts) - 1)
    # the largest unit, then the next one down unless it is zero: "6 h", never "6 h 8 s"
    shown = [c for c in counts[first : first + 2] if c[0] or c is counts[first]]
    return sign + " ".join(f"{count} {unit}" for count, unit in shown)


@register.filter
def since(value: object) -> SafeString | str:
    """A moment as relative time ('3 h ago', 'in 5 m') with the absolute UTC time on hover."""
    if not isinstance(value, datetime):
        return EMPTY
    delta = (timezone.now() - value).total_seconds()
    if abs(delta) < 45:
        text = "just now"
    else:
        amount = duration(abs(delta)).split(" ")
        text = " ".join(amount[:2])  # the largest unit is enough in running text
        text = f"{text} ago" if delta > 0 else f"in {text}"
    moment = value.astimezone(UTC)
    return format_html(
        '<time datetime="{}" title="{}">{}</time>',
        moment.isoformat(timespec="seconds"),
        moment.strftime("%Y-%m-%d %H:%M:%S UTC"),
        text,
    )


@register.filter(name="bytes")
def bytes_(value: object) -> str:
    """A byte count in binary units: '512 B', '38.1 MiB', '1.4 GiB'."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return EMPTY
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return EMPTY  # unreachable: the loop returns at TiB


@register.filter
def pct(value: object, digits: int = 1) -> str:
    """A fraction as a percentage: 0.9134 -> '91.3%'; None -> '—'."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return EMPTY
    return f"{value * 100:.{int(digits)}f}%"


@register.filter
def meter(value: object) -> int:
    """A ratio as a bar width in percent, clamped to 0..100: 0.42 -> 42, 1.3 -> 100."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return 0
    return max(0, min(100, round(value * 100)))


_LABELS = {"ab_test": "A/B test", "rolled_back": "rolled back"}


@register.filter
def label(value: object) -> str:
    """A stored choice value as words: 'ab_test' -> 'A/B test', 'feedback:write' unchanged."""
    text = str(value)
    return _LABELS.get(text, text.replace("_", " "))


@register.filter
def segments(versions: object) -> list[dict[str, object]]:
    """Serving versions as SVG bar segments (x, width in %), since CSP forbids style="".

    Shadow copies carry no live traffic and are left out of the bar.
    """
    out: list[dict[str, object]] = []
    x = 0
    for v in versions or []:  # type: ignore[attr-defined]
        weight = int(getattr(v, "weight", 0) or 0)
        if weight <= 0:
            continue
        out.append({"x": x, "width": weight, "role": v.role, "v": v})
        x += weight
    return out


@register.filter
def short_sha(value: object) -> str:
    """The first 12 hex digits of a sha256."""
    return str(value or "")[:12] or EMPTY


@register.filter
def get(mapping: object, key: object) -> object:
    """mapping[key], or None: `{{ attention|get:app.id }}`."""
    return mapping.get(key) if isinstance(mapping, dict) else None


@register.filter
def signed_pct(value: object) -> str:
    """A relative change with its sign: 0.2 -> '+20.0%'."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return EMPTY
    return f"{value * 100:+.1f}%"


@register.filter
def pvalue(value: object) -> str:
    """A p-value as people read it: '0.042', '< 0.001'."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return EMPTY
    return "< 0.001" if value < 0.001 else f"{value:.3f}"
