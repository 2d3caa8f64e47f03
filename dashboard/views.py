"""Pages: thin views that read a selector, build figures and render (STYLE R20)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from . import selectors


@login_required
def home(request: HttpRequest) -> HttpResponse:
    """The fleet table: what serves each application, and how old it is against the SLO."""
    rows = selectors.fleet_rows()
    return render(request, "dashboard/home.html", {"rows": rows})
