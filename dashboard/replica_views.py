"""The replica page of a deployment: who reports what, who is stale, what the probe found."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from registry.models import ConsistencyCheck, Deployment
from registry.replica_selectors import replica_page
from registry.roles import is_devops
from registry.tasks import probe_deployment_task


@login_required
@require_GET
def deployment_replicas(request: HttpRequest, pk: int) -> HttpResponse:
    """Replicas of one deployment: reported vs expected artifact, heartbeat age, last verdict."""
    page = replica_page(deployment_id=pk)
    if page is None:
        raise Http404
    context = {"page": page, "can_probe": is_devops(request.user)}
    return render(request, "dashboard/replicas.html", context)


@login_required
@require_POST
def probe_now(request: HttpRequest, pk: int) -> HttpResponse:
    """Queue a golden-input probe of the deployment now (devops only), then back to the page."""
    if not is_devops(request.user):
        raise PermissionDenied("only the devops role may probe replicas")
    if not Deployment.objects.filter(pk=pk).exists():
        raise Http404
    # a web worker never waits on replicas: the probe runs on the `probes` queue
    transaction.on_commit(
        lambda: probe_deployment_task.delay(
            pk,
            trigger=ConsistencyCheck.Trigger.MANUAL,
            triggered_by=request.user.get_username(),
        )
    )
    messages.info(request, "Probe queued: reload in a few seconds to see its verdicts.")
    return redirect("dashboard:deployment-replicas", pk=pk)
