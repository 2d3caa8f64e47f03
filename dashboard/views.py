"""Pages: thin views that read a selector, build figures and render (STYLE R20)."""

from __future__ import annotations

from datetime import timedelta

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from registry.api.filters import AuditEventFilterSet
from registry.exceptions import DomainError
from registry.models import ApiToken, Deployment
from registry.numbers import ascii_int
from registry.roles import Actor, is_devops
from registry.services import ROLLOUT_ACTIONS, create_api_token, revoke_api_token
from registry.services.rollouts import TRANSITIONS

from . import charts, page_selectors, selectors
from .fleet_rows import fleet_rows
from .forms import RolloutActionForm, TokenCreateForm

FLEET_REFRESH_SECONDS = 10
AUDIT_PAGE_SIZE = 50
UI_ROLLOUT_ACTIONS = ("start", "pause", "resume", "promote", "rollback", "abort")


def _page_number(request: HttpRequest) -> int:
    raw = request.GET.get("page", "1")
    return ascii_int(raw, max_digits=9) or 1


@login_required
@require_GET
def home(request: HttpRequest) -> HttpResponse:
    """The fleet table: what serves each application, and how old it is against the SLO.

    htmx polls this same view; it then renders only the table, so the page and its
    refreshes can never disagree.
    """
    filters = {
        "q": request.GET.get("q", "").strip(),
        "team": request.GET.get("team", ""),
        "environment": request.GET.get("environment", ""),
        "attention_only": request.GET.get("attention") == "1",
    }
    fleet = selectors.fleet_page(**filters, page=_page_number(request))
    context = {"fleet": fleet, "rows": fleet_rows(fleet.rows, fleet.attention), "filters": filters,
               "refresh_seconds": FLEET_REFRESH_SECONDS,
               "environments": Deployment.Environment.values}  # fmt: skip
    if request.htmx:
        return render(request, "dashboard/partials/_fleet_table.html", context)
    links = [
        charts.FlowLink(
            v.model, f"{v.model} v{v.version}", f"{a.slug}/{d.name}", a.slug, v.weight, v.role
        )  # fmt: skip
        for a in fleet.rows
        for d in a.deployments
        for v in d.versions
    ]
    context["sankey"] = (
        charts.figure_script(charts.sankey_figure(links), "fig-sankey") if links else None
    )
    return render(request, "dashboard/home.html", context)


# --- Application, model, rollout, replicas, audit ---


@login_required
@require_GET
def application_detail(request: HttpRequest, slug: str) -> HttpResponse:
    """Deployments, traffic over time, quality by version against events, reports, audit."""
    window = request.GET.get("window", page_selectors.DEFAULT_WINDOW)
    page = page_selectors.application_page(slug=slug, window=window)
    if page is None:
        raise Http404
    now = page.since + page_selectors.WINDOWS.get(window, page_selectors.WINDOWS["7d"])
    figures = {
        "traffic": charts.traffic_split_figure(page.spans, now=now) if page.spans else None,
        "timeline": charts.version_timeline_figure(page.spans, now=now) if page.spans else None,
        "quality": charts.quality_figure(page.quality, page.markers) if page.quality else None,
    }
    context = {"page": page, "window": window, "windows": list(page_selectors.WINDOWS),
               **{k: charts.figure_script(f, f"fig-{k}") if f else None
                  for k, f in figures.items()}}  # fmt: skip
    return render(request, "dashboard/application.html", context)


@login_required
@require_GET
def model_detail(request: HttpRequest, name: str) -> HttpResponse:
    """Consumers, versions, accuracy over time and where each version serves."""
    page = page_selectors.model_page(name=name, window=request.GET.get("window", "30d"))
    if page is None:
        raise Http404
    offline = [
        charts.OfflinePoint(f"v{v.version}", v.trained_at, v.offline_accuracy)
        for v in page.versions[:30]
    ]
    figure = charts.accuracy_figure(offline, page.online) if offline or page.online else None
    accuracy = charts.figure_script(figure, "fig-accuracy") if figure else None
    context = {"page": page, "accuracy": accuracy}
    return render(request, "dashboard/model.html", context)


@login_required
@require_GET
def rollout_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """Strategy, steps, per-arm figures with intervals, SRM, guardrails; devops act here."""
    page = page_selectors.rollout_page(pk=pk)
    if page is None:
        raise Http404
    can_act = is_devops(request.user)
    actions = [a for a in UI_ROLLOUT_ACTIONS if page.rollout.state in TRANSITIONS[a]]
    arms = charts.figure_script(charts.arms_figure(page.arms), "fig-arms") if page.arms else None
    context = {
        "page": page,
        "actions": actions if can_act else [],
        "form": RolloutActionForm(),
        "arms": arms,
    }
    return render(request, "dashboard/rollout.html", context)


@login_required
@require_POST
def rollout_action(request: HttpRequest, pk: int, action: str) -> HttpResponse:
    """Run one rollout transition with a reason (devops only), then back to the page (PRG)."""
    if not is_devops(request.user):
        raise PermissionDenied("only the devops role may change a rollout")
    if action not in UI_ROLLOUT_ACTIONS:
        raise Http404
    form = RolloutActionForm(request.POST)
    if not form.is_valid():
        messages.error(request, f"Not done: {action} needs a reason.")
        return redirect("dashboard:rollout-detail", pk=pk)
    try:
        ROLLOUT_ACTIONS[action](
            actor=Actor.of(request.user), rollout_id=pk, reason=form.cleaned_data["reason"]
        )
    except DomainError as exc:  # illegal now (someone else moved it): say so, change nothing
        messages.error(request, f"Not done: {exc}")
    else:
        messages.success(request, f"Rollout #{pk}: {action} done.")
    return redirect("dashboard:rollout-detail", pk=pk)


@login_required
@require_GET
def replicas(request: HttpRequest) -> HttpResponse:
    """Every deployment's replicas as a grid, deployments with problems first."""
    q = request.GET.get("q", "").strip()
    problems = request.GET.get("problems") == "1"
    page = page_selectors.replicas_page(q=q, problems_only=problems, page=_page_number(request))
    context = {"page": page, "q": q, "problems": problems}
    return render(request, "dashboard/replicas_overview.html", context)


@login_required
@require_GET
def audit_log(request: HttpRequest) -> HttpResponse:
    """The audit log, filtered with the API's own FilterSet (STYLE R11), 50 per page."""
    filterset = AuditEventFilterSet(request.GET or None, queryset=page_selectors.audit_events())
    events = filterset.qs if filterset.is_valid() else page_selectors.audit_events().none()
    paginator = Paginator(events, AUDIT_PAGE_SIZE)
    context = {
        "filterset": filterset,
        "events": paginator.get_page(request.GET.get("page")),
        "kinds": page_selectors.audit_kinds(),
        "query": request.GET.copy(),
    }
    context["query"].pop("page", None)
    return render(request, "dashboard/audit.html", context)


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
