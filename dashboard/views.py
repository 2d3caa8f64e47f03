"""Pages: thin views that read a selector, build figures and render (STYLE R20)."""

from __future__ import annotations

from datetime import timedelta

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from registry.models import ApiToken
from registry.roles import Actor
from registry.services import create_api_token, revoke_api_token

from . import selectors
from .forms import TokenCreateForm

FLEET_REFRESH_SECONDS = 10


@login_required
@require_GET
def home(request: HttpRequest) -> HttpResponse:
    """The fleet table: what serves each application, and how old it is against the SLO.

    htmx polls this same view; it then renders only the table, so the page and its
    refreshes can never disagree.
    """
    rows = selectors.fleet_status()
    context = {
        "rows": rows,
        "summary": selectors.fleet_summary(rows),
        "refresh_seconds": FLEET_REFRESH_SECONDS,
    }
    if request.htmx:
        return render(request, "dashboard/partials/_fleet_table.html", context)
    return render(request, "dashboard/home.html", context)


# --- API tokens ---


def _token_page(
    request: HttpRequest, form: TokenCreateForm, created: tuple[ApiToken, str] | None = None
) -> HttpResponse:
    context = {"tokens": selectors.api_tokens_of(request.user), "form": form, "created": created}
    response = render(request, "dashboard/tokens.html", context, status=201 if created else 200)
    if created:
        response["Cache-Control"] = "no-store"  # the secret must not linger in any cache
    return response


@login_required
@require_http_methods(["GET", "POST"])
def tokens(request: HttpRequest) -> HttpResponse:
    """List the user's API tokens and create one; the secret is shown in this response only."""
    if request.method == "GET":
        return _token_page(request, TokenCreateForm(user=request.user))
    form = TokenCreateForm(request.POST, user=request.user)
    if not form.is_valid():
        return _token_page(request, form)
    created = create_api_token(
        actor=Actor.of(request.user),
        user=request.user,
        name=form.cleaned_data["name"],
        scopes=form.cleaned_data["scopes"],
        ttl=timedelta(days=form.cleaned_data["expires_in_days"]),
    )
    return _token_page(request, TokenCreateForm(user=request.user), created)


@login_required
@require_POST
def revoke_token(request: HttpRequest, pk: int) -> HttpResponse:
    """Revoke one of the user's own tokens (another user's token is a plain 404)."""
    token = get_object_or_404(ApiToken, pk=pk, user=request.user)
    revoke_api_token(actor=Actor.of(request.user), token=token, reason="revoked in the web UI")
    messages.success(request, f"Token “{token.name}” ({token.prefix}…) revoked.")
    return redirect("dashboard:tokens")
