from django.urls import path
from rest_framework.routers import DefaultRouter

from . import views
from .alerts import AlertRuleViewSet, AlertViewSet
from .rollouts_analysis import RolloutAnalysisView

app_name = "feedback-api"

router = DefaultRouter()
router.register("alerts", AlertViewSet, basename="alert")
router.register("alert-rules", AlertRuleViewSet, basename="alert-rule")
router.register("feedback-reports", views.FeedbackReportViewSet, basename="feedback-report")

batches = views.IngestBatchViewSet
urlpatterns = [
    path("feedback/", views.FeedbackIngestView.as_view(), name="feedback-ingest"),
    path("ingest-batches/", batches.as_view({"get": "list"}), name="ingest-batch-list"),
    # no trailing slash: the exact URL that 202 answers carry in Location
    path(
        "ingest-batches/<int:pk>",
        batches.as_view({"get": "retrieve"}),
        name="ingest-batch-detail",
    ),
    # before the registry router (dashboard/urls.py includes this module first)
    path("rollouts/<int:pk>/analysis", RolloutAnalysisView.as_view(), name="rollout-analysis"),
    *router.urls,
]
