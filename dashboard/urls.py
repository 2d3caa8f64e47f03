from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.routers import DefaultRouter

from . import alert_views, api, health, metrics, replica_views, views, webhook_api

webhook_routes = DefaultRouter(trailing_slash=True)
webhook_routes.include_root_view = False
webhook_routes.register("webhooks", webhook_api.WebhookSubscriptionViewSet, basename="webhook")

dashboard_patterns = [
    path("", views.home, name="home"),
    path("alerts/", alert_views.alerts, name="alerts"),
    path("applications/<slug:slug>/", views.application_detail, name="application-detail"),
    path("models/<str:name>/", views.model_detail, name="model-detail"),
    path("rollouts/<int:pk>/", views.rollout_detail, name="rollout-detail"),
    path("rollouts/<int:pk>/<str:action>/", views.rollout_action, name="rollout-action"),
    path("replicas/", views.replicas, name="replicas"),
    path("audit/", views.audit_log, name="audit"),
    path("tokens/", views.tokens, name="tokens"),
    path("tokens/<int:pk>/revoke/", views.revoke_token, name="token-revoke"),
    path(
        "deployments/<int:pk>/replicas/",
        replica_views.deployment_replicas,
        name="deployment-replicas",
    ),
    path("deployments/<int:pk>/replicas/probe/", replica_views.probe_now, name="deployment-probe"),
]

urlpatterns = [
    path("", include((dashboard_patterns, "dashboard"))),
    path("feedback/", include("feedback.urls")),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("livez", health.livez, name="livez"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics.metrics, name="metrics"),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    path(
        "api/v1/applications/<str:slug>/status",
        api.ApplicationStatusView.as_view(),
        name="application-status",
    ),
    path("api/v1/status", api.FleetStatusView.as_view(), name="fleet-status"),
    path("api/v1/", include((webhook_routes.urls, "dashboard-api"))),
    path("api/v1/", include("feedback.api.urls")),
    path("api/v1/", include("registry.api.urls")),
]

handler404 = "registry.api.views.not_found"  # JSON under /api/, HTML elsewhere
