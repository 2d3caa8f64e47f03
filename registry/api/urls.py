"""Registry API routes, mounted at /api/v1/ by dashboard/urls.py.

Nested model routes are explicit paths; the exact URLs of the contract (no trailing slash on
`aliases/{alias}` and `allocation`) are kept as documented.
"""

from django.urls import path
from rest_framework.routers import DefaultRouter

from . import replicas, views
from .rollouts import RolloutViewSet

app_name = "registry-api"

router = DefaultRouter()
router.register("applications", views.ApplicationViewSet, basename="application")
router.register("models", views.RegisteredModelViewSet, basename="model")
router.register("versions", views.VersionViewSet, basename="version")
router.register("deployments", views.DeploymentViewSet, basename="deployment")
router.register("replicas", views.ReplicaViewSet, basename="replica")
router.register("audit-events", views.AuditEventViewSet, basename="audit-event")
router.register("rollouts", RolloutViewSet, basename="rollout")
router.register("golden-sets", replicas.GoldenSetViewSet, basename="golden-set")
router.register(
    "consistency-checks", replicas.ConsistencyCheckViewSet, basename="consistency-check"
)

model_versions = views.ModelVersionsViewSet.as_view({"get": "list", "post": "create"})
model_version = views.ModelVersionsViewSet.as_view({"get": "retrieve"})
model_aliases = views.ModelAliasesViewSet.as_view({"get": "list"})
model_alias = views.ModelAliasesViewSet.as_view({"get": "retrieve", "put": "move", "post": "move"})
deployment_allocation = views.DeploymentViewSet.as_view(
    {"get": "allocation", "put": "set_allocation"}
)

urlpatterns = [
    path("replicas/heartbeat", replicas.HeartbeatView.as_view(), name="replica-heartbeat"),
    path("models/<str:name>/versions/", model_versions, name="model-versions"),
    path("models/<str:name>/versions/<str:version>/", model_version, name="model-version"),
    path("models/<str:name>/aliases/", model_aliases, name="model-aliases"),
    path("models/<str:name>/aliases/<str:alias>", model_alias, name="model-alias"),
    path("deployments/<str:pk>/allocation", deployment_allocation, name="deployment-allocation"),
    *router.urls,
]
