"""Admin for replica consistency (imported by registry/admin.py).

Golden sets are written through registry.services.probes.save_golden_set, so admin edits are
validated like API ones and land in the audit log; checks and results are read-only records.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest

from .exceptions import DomainError
from .models import ConsistencyCheck, GoldenSet, ReplicaProbeResult
from .roles import Actor
from .services.probes import delete_golden_set, save_golden_set, validate_golden_set


class GoldenSetForm(forms.ModelForm):
    class Meta:
        model = GoldenSet
        fields = [
            "registered_model",
            "name",
            "description",
            "rule",
            "abs_tolerance",
            "rel_tolerance",
            "top_k",
            "min_overlap",
            "inputs",
            "active",
        ]
        help_texts = {
            "inputs": '[{"name": "q1", "input": {...}, "expected": {...}}, ...]; expected optional.'
        }

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        try:
            validate_golden_set(
                rule=data.get("rule", ""),
                inputs=data.get("inputs"),
                top_k=data.get("top_k"),
                abs_tolerance=data.get("abs_tolerance") or 0.0,
                rel_tolerance=data.get("rel_tolerance") or 0.0,
            )
        except DomainError as exc:
            self.add_error(exc.field if exc.field in self.fields else None, exc.message)
        return data


@admin.register(GoldenSet)
class GoldenSetAdmin(admin.ModelAdmin):
    form = GoldenSetForm
    list_display = ["name", "registered_model", "rule", "active", "updated_at"]
    list_filter = ["rule", "active"]
    search_fields = ["name", "registered_model__name"]
    list_select_related = ["registered_model"]

    def save_model(self, request: HttpRequest, obj: GoldenSet, form: Any, change: bool) -> None:
        data = {f: form.cleaned_data[f] for f in GoldenSetForm.Meta.fields}
        saved = save_golden_set(
            actor=Actor.of(request.user),
            golden_set=GoldenSet.objects.get(pk=obj.pk) if change else None,
            **data,
        )
        obj.pk = saved.pk

    def delete_model(self, request: HttpRequest, obj: GoldenSet) -> None:
        delete_golden_set(actor=Actor.of(request.user), golden_set=obj)


class ReplicaProbeResultInline(admin.TabularInline):
    model = ReplicaProbeResult
    extra = 0
    can_delete = False
    fields = ["replica", "verdict", "latency_ms", "answered", "reported_sha256", "detail"]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(ConsistencyCheck)
class ConsistencyCheckAdmin(admin.ModelAdmin):
    list_display = ["started_at", "deployment", "outcome", "trigger", "inputs_sent", "counts"]
    list_filter = ["outcome", "trigger"]
    list_select_related = ["deployment__application"]
    inlines = [ReplicaProbeResultInline]
    readonly_fields = [f.name for f in ConsistencyCheck._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # checks are what a probe found, not something to type in

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
