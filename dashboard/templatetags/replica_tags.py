"""Formatting for the replica page: answers shown as indented JSON (escaped by the template)."""

from __future__ import annotations

import json

from django import template

register = template.Library()


@register.filter
def pretty_json(value: object) -> str:
    """A JSON value as indented text, capped so one huge answer cannot swamp the page."""
    text = json.dumps(value, indent=2, sort_keys=True, default=str)
    return text if len(text) <= 4000 else text[:4000] + "\n…"
