from django.contrib import admin
from django.db import models

from .models import (
    AliasAssignment,
    ApiToken,
    Application,
    AuditEvent,
    Deployment,
    ModelAlias,
    ModelVersion,
    RegisteredModel,
    Replica,
    Rollout,
    TrafficAllocation,
)

# A URL typed without a scheme is taken as https (Django 6's default; 5.2 warns without it).
ASSUME_HTTPS = {models.URLField: {"assume_scheme": "https"}}


@admin.register(Application)
class ApplicationAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "team", "criticality", "max_model_age"]
    list_filter = ["team", "criticality"]
    search_fields = ["slug", "name", "team"]


class ModelAliasInline(admin.TabularInline):
    model = ModelAlias
    extra = 0
    readonly_fields = ["name", "version", "protected"]
    can_delete = False


@admin.register(RegisteredModel)
class RegisteredModelAdmin(admin.ModelAdmin):
    list_display = ["name", "team", "task"]
    search_fields = ["name", "team"]
    inlines = [ModelAliasInline]


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    formfield_overrides = ASSUME_HTTPS
    list_display = ["registered_model", "version", "stage", "format", "framework", "trained_at"]
    list_filter = ["stage", "format", "framework"]
    search_fields = ["registered_model__name", "sha256"]
    list_select_related = ["registered_model"]
    readonly_fields = ["sha256", "artifact_uri", "size_bytes", "registered_by"]


@admin.register(AliasAssignment)
class AliasAssignmentAdmin(admin.ModelAdmin):
    list_display = ["alias", "version", "assigned_at", "replaced_at", "assigned_by"]
    list_select_related = ["alias__registered_model", "version__registered_model", "assigned_by"]


class TrafficAllocationInline(admin.TabularInline):
    model = TrafficAllocation
    extra = 0
    can_delete = False
    readonly_fields = ["model_version", "weight", "role", "valid_from", "valid_to"]

    def has_add_permission(self, request, obj=None):
        return False  # allocations change through set_allocation, which audits them


@admin.register(Deployment)
class DeploymentAdmin(admin.ModelAdmin):
    formfield_overrides = ASSUME_HTTPS
    list_display = ["__str__", "environment", "desired_replicas", "endpoint_url"]
    list_filter = ["environment"]
    list_select_related = ["application"]
    inlines = [TrafficAllocationInline]


@admin.register(Replica)
class ReplicaAdmin(admin.ModelAdmin):
    formfield_overrides = ASSUME_HTTPS
    list_display = [
        "instance_id",
        "deployment",
        "host",
        "reported_sha256",
        "last_heartbeat_at",
        "last_probe_verdict",
    ]
    list_select_related = ["deployment__application"]
    search_fields = ["instance_id", "host"]


@admin.register(Rollout)
class RolloutAdmin(admin.ModelAdmin):
    list_display = ["__str__", "strategy", "state", "current_step", "started_at"]
    list_filter = ["strategy", "state"]
    list_select_related = ["deployment__application", "candidate_version__registered_model"]


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ["at", "actor_label", "kind", "target_repr", "application"]
    list_filter = ["kind"]
    search_fields = ["actor_label", "target_repr", "reason"]
    list_select_related = ["application"]

    def has_change_permission(self, request, obj=None):
        return False  # the audit log is append-only

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "user", "prefix", "scopes", "expires_at", "revoked_at", "last_used_at"]
    readonly_fields = ["prefix", "key_hash", "last_used_at", "created_at"]
    list_select_related = ["user"]


from . import replica_admin  # noqa: E402, F401  (golden sets, consistency checks)
