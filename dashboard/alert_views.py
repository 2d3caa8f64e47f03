"""The alerts page: what fires now, and what fired and resolved recently."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from feedback.alert_selectors import alert_list
from feedback.models import Alert

PAGE_SIZE = 200
STATES = {"firing": Alert.State.FIRING, "resolved": Alert.State.RESOLVED, "all": None}


@login_required
@require_GET
def alerts(request: HttpRequest) -> HttpResponse:
    """Alerts newest first, filtered by state (firing by default), at most PAGE_SIZE."""
    state = request.GET.get("state", "firing")
    if state not in STATES:
        state = "firing"
    rows = alert_list().order_by("-started_at", "-id")
    if STATES[state]:
        rows = rows.filter(state=STATES[state])
    context = {"alerts": list(rows[:PAGE_SIZE]), "state": state, "states": list(STATES)}
    return render(request, "dashboard/alerts.html", context)
