"""Reads of alerts for the API, the alerts page and the status endpoint; N+1-free."""

from __future__ import annotations

from collections.abc import Iterable

from django.db.models import QuerySet

from .models import Alert, AlertRule


def alert_list() -> QuerySet[Alert]:
    """Alerts with their rule, application, deployment and version, in one query."""
    return Alert.objects.select_related(
        "rule", "application", "deployment", "model_version__registered_model"
    )


def firing_alerts_for(application_ids: Iterable[int]) -> QuerySet[Alert]:
    """Firing alerts of these applications, newest first (one query)."""
    return (
        alert_list()
        .filter(state=Alert.State.FIRING, application_id__in=list(application_ids))
        .order_by("-started_at", "-id")
    )


def alert_rule_list() -> QuerySet[AlertRule]:
    return AlertRule.objects.select_related("application")
