"""Forms of the web UI; they validate input, services do the writing."""

from __future__ import annotations

from typing import Any

from django import forms

from registry.models import ApiToken
from registry.roles import DEVOPS, PRODUCT, has_role

Scope = ApiToken.Scope

SCOPE_HELP = {
    Scope.READ: "Read the registry, status and feedback figures",
    Scope.FEEDBACK_WRITE: "Submit feedback events and reports",
    Scope.REGISTRY_WRITE: "Register versions, move aliases, change allocations and rollouts",
    Scope.REPLICA_WRITE: "Send replica heartbeats",
}


def allowed_token_scopes(user: Any) -> list[str]:
    """The scopes a user may put on a token: never more than the user's role can use."""
    if has_role(user, DEVOPS):
        return list(Scope.values)
    if has_role(user, PRODUCT):
        return [Scope.READ, Scope.FEEDBACK_WRITE]
    return [Scope.READ]


class TokenCreateForm(forms.Form):
    name = forms.CharField(
        max_length=100,
        help_text="What uses it, e.g. “ci-pipeline” or “feed-sidecar”.",
        widget=forms.TextInput(attrs={"placeholder": "ci-pipeline", "autocomplete": "off"}),
    )
    scopes = forms.MultipleChoiceField(widget=forms.CheckboxSelectMultiple)
    expires_in_days = forms.IntegerField(
        min_value=1, max_value=365, initial=90, label="Expires in (days)"
    )

    def __init__(self, *args: Any, user: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        allowed = allowed_token_scopes(user)
        self.fields["scopes"].choices = [(s, f"{s} — {SCOPE_HELP[Scope(s)]}") for s in allowed]
        self.fields["scopes"].initial = [Scope.READ]


class RolloutActionForm(forms.Form):
    """A rollout transition from the web UI: the reason lands in the audit log."""

    reason = forms.CharField(
        max_length=500,
        strip=True,
        widget=forms.TextInput(attrs={"placeholder": "Why? (kept in the audit log)"}),
    )
