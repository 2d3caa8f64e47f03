"""Feedback pages: uploads and their live batch page, reports and their triage (STYLE R20)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from registry.models import Application
from registry.roles import Actor, can_file_feedback, is_devops

from . import selectors, services
from .constants import CSV_COLUMNS
from .forms import ReportForm, TriageForm, UploadForm
from .models import FeedbackReport, IngestBatch

BATCH_REFRESH_SECONDS = 1
BATCH_PAGE_SIZE = 50


@login_required
@require_http_methods(["GET", "POST"])
def upload(request: HttpRequest) -> HttpResponse:
    """Upload a CSV or JSONL file of events; it takes the same path as the API."""
    if request.method == "POST":
        if not can_file_feedback(request.user):
            raise PermissionDenied
        form = UploadForm(request.POST, request.FILES)
        if form.is_valid():
            file = form.cleaned_data["file"]
            batch, _ = services.submit_batch(
                actor=Actor.of(request.user), raw=file.raw, fmt=file.format,
                source=IngestBatch.Source.UPLOAD, filename=file.name,
                default_application=form.cleaned_data["application"],
                request_id=getattr(request, "request_id", ""),
            )  # fmt: skip
            return redirect("feedback:batch-detail", pk=batch.pk)
    else:
        form = UploadForm()
    batches = selectors.ingest_batch_list(user=request.user)[:10]
    return render(request, "feedback/upload.html", {"form": form, "batches": batches})


@login_required
@require_GET
def batches(request: HttpRequest) -> HttpResponse:
    """Every batch the user may see (devops: all; others: their own), newest first, by state
    and source, BATCH_PAGE_SIZE a page."""
    rows = selectors.ingest_batch_list(user=request.user).order_by("-pk")
    state, source = request.GET.get("state", ""), request.GET.get("source", "")
    if state in IngestBatch.State.values:
        rows = rows.filter(state=state)
    if source in IngestBatch.Source.values:
        rows = rows.filter(source=source)
    context = {
        "page": Paginator(rows, BATCH_PAGE_SIZE).get_page(request.GET.get("page")),
        "state": state,
        "source": source,
        "states": IngestBatch.State.choices,
        "sources": IngestBatch.Source.choices,
    }
    return render(request, "feedback/batches.html", context)


@login_required
@require_GET
def batch_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """A batch's counts and per-row errors; htmx refreshes them until the batch is done."""
    batch = get_object_or_404(selectors.ingest_batch_list(user=request.user), pk=pk)
    context = {"batch": batch, "refresh_seconds": BATCH_REFRESH_SECONDS}
    if request.htmx:
        return render(request, "feedback/partials/_batch_status.html", context)
    return render(request, "feedback/batch_detail.html", context)


@login_required
@require_GET
def csv_template(request: HttpRequest) -> HttpResponse:
    """An empty CSV with every column and one example row."""
    example = (
        "3f1c9a52-8a4e-4d61-9d0b-6c1f2e7a9b10,2026-01-31T12:00:00Z,recommender,ranker:3,,"
        "click,1,,,req-123,web,{}"
    )
    response = HttpResponse(",".join(CSV_COLUMNS) + "\n" + example + "\n", content_type="text/csv")
    response["Content-Disposition"] = 'attachment; filename="feedback-template.csv"'
    return response


# --- Reports ---


@login_required
@require_GET
def reports(request: HttpRequest) -> HttpResponse:
    """The triage list, newest first, filtered by state (open by default)."""
    state = request.GET.get("state", FeedbackReport.State.OPEN)
    rows = selectors.report_list()
    if state in FeedbackReport.State.values:
        rows = rows.filter(state=state)
    context = {
        "reports": rows[:200],
        "state": state,
        "tabs": list(selectors.report_counts().items()),
        "can_triage": is_devops(request.user),
    }
    return render(request, "feedback/reports.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def report_new(request: HttpRequest) -> HttpResponse:
    """ "Report a problem with a model"; the version is pre-filled from what serves now."""
    if not can_file_feedback(request.user):
        raise PermissionDenied
    if request.method == "POST":
        form = ReportForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            report = services.file_report(actor=Actor.of(request.user), **data)
            messages.success(request, f"Report #{report.pk} filed. DevOps will triage it.")
            return redirect("feedback:reports")
    else:
        initial = {}
        app = Application.objects.filter(slug=request.GET.get("application", "")).first()
        if app is not None:
            initial = {"application": app, "model_version": services.serving_version(app)}
        form = ReportForm(initial=initial)
    return render(request, "feedback/report_new.html", {"form": form})


@login_required
@require_POST
def report_transition(request: HttpRequest, pk: int, to: str) -> HttpResponse:
    """Acknowledge or resolve a report (devops), then back to the list."""
    if not is_devops(request.user):
        raise PermissionDenied
    form = TriageForm(request.POST)
    note = form.cleaned_data["note"] if form.is_valid() else ""
    service = services.acknowledge_report if to == "acknowledge" else services.resolve_report
    report = service(actor=Actor.of(request.user), report_id=pk, note=note)
    messages.success(request, f"Report #{report.pk} is now {report.state}.")
    back = request.GET.get("back", FeedbackReport.State.OPEN)
    return redirect(f"{reverse('feedback:reports')}?{urlencode({'state': back})}")


@login_required
@require_GET
def application_sources(request: HttpRequest, slug: str) -> HttpResponse:
    """Fragment for the application page: its pull sources, last success and last error."""
    app = get_object_or_404(Application, slug=slug)
    context = {"application": app, "sources": selectors.sources_of(app)}
    return render(request, "feedback/partials/_sources.html", context)
