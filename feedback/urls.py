"""Feedback pages, mounted at /feedback/ by dashboard/urls.py (namespace `feedback`)."""

from django.urls import path

from . import views

app_name = "feedback"

urlpatterns = [
    path("upload/", views.upload, name="upload"),
    path("batches/", views.batches, name="batches"),
    path("batches/<int:pk>/", views.batch_detail, name="batch-detail"),
    path("template.csv", views.csv_template, name="csv-template"),
    path("reports/", views.reports, name="reports"),
    path("reports/new/", views.report_new, name="report-new"),
    path(
        "reports/<int:pk>/acknowledge/",
        views.report_transition,
        {"to": "acknowledge"},
        name="report-acknowledge",
    ),
    path(
        "reports/<int:pk>/resolve/",
        views.report_transition,
        {"to": "resolve"},
        name="report-resolve",
    ),
    path(
        "applications/<slug:slug>/sources/",
        views.application_sources,
        name="application-sources",
    ),
]
