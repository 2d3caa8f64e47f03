"""Applications, registered models, versions, aliases and deployments."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from ..exceptions import DuplicateVersion, InvalidInput, PermissionDenied
from ..models import (
    AliasAssignment,
    Application,
    Deployment,
    ModelAlias,
    ModelVersion,
    RegisteredModel,
)
from ..roles import Actor
from .audit import record_audit_event


@transaction.atomic
def create_application(
    *,
    actor: Actor,
    slug: str,
    name: str,
    team: str,
    max_model_age: timedelta,
    criticality: str = Application.Criticality.MEDIUM,
    description: str = "",
    reason: str = "",
) -> Application:
    """Create an application with its model-age SLO."""
    if Application.objects.filter(slug=slug).exists():
        raise DuplicateVersion(f"application {slug!r} already exists", field="slug")
    app = Application.objects.create(
        slug=slug,
        name=name,
        team=team,
        max_model_age=max_model_age,
        criticality=criticality,
        description=description,
    )
    record_audit_event(
        actor=actor,
        kind="application.created",
        target=app,
        application=app,
        reason=reason,
        after={"slug": slug, "team": team, "max_model_age_s": max_model_age.total_seconds()},
    )
    return app


APPLICATION_EDITABLE = ("name", "team", "criticality", "max_model_age", "description")


def _application_snapshot(app: Application) -> dict[str, Any]:
    out = {f: getattr(app, f) for f in APPLICATION_EDITABLE}
    out["max_model_age"] = app.max_model_age.total_seconds()
    return out


@transaction.atomic
def update_application(
    *, actor: Actor, application: Application, reason: str = "", **changes: Any
) -> Application:
    """Change an application's name, team, criticality, SLO or description (never its slug)."""
    unknown = sorted(set(changes) - set(APPLICATION_EDITABLE))
    if unknown:
        raise InvalidInput(f"cannot change {', '.join(unknown)}", field=unknown[0])
    app = Application.objects.select_for_update().get(pk=application.pk)
    before = _application_snapshot(app)
    for name, value in changes.items():
        setattr(app, name, value)
    after = _application_snapshot(app)
    if after == before:
        return app  # nothing changes: no audit noise
    app.save(update_fields=[*changes, "updated_at"])
    record_audit_event(
        actor=actor,
        kind="application.updated",
        target=app,
        application=app,
        reason=reason,
        before={k: v for k, v in before.items() if after[k] != v},
        after={k: v for k, v in after.items() if before[k] != v},
    )
    return app


@transaction.atomic
def create_registered_model(
    *,
    actor: Actor,
    name: str,
    team: str = "",
    task: str = "",
    description: str = "",
    reason: str = "",
) -> RegisteredModel:
    """Create a registered model (the container of versions)."""
    if RegisteredModel.objects.filter(name=name).exists():
        raise DuplicateVersion(f"model {name!r} already exists", field="name")
    model = RegisteredModel.objects.create(name=name, team=team, task=task, description=description)
    record_audit_event(
        actor=actor, kind="model.created", target=model, reason=reason, after={"name": name}
    )
    return model


@transaction.atomic
def create_deployment(
    *,
    actor: Actor,
    application: Application,
    name: str,
    environment: str = Deployment.Environment.PRODUCTION,
    endpoint_url: str = "",
    desired_replicas: int = 1,
    heartbeat_timeout: timedelta | None = None,
    reason: str = "",
) -> Deployment:
    """Create a deployment of an application in one environment."""
    if Deployment.objects.filter(application=application, name=name).exists():
        raise DuplicateVersion(
            f"deployment {name!r} already exists for {application}", field="name"
        )
    deployment = Deployment.objects.create(
        application=application,
        name=name,
        environment=environment,
        endpoint_url=endpoint_url,
        desired_replicas=desired_replicas,
        heartbeat_timeout=heartbeat_timeout or settings.DEFAULT_HEARTBEAT_TIMEOUT,
    )
    record_audit_event(
        actor=actor,
        kind="deployment.created",
        target=deployment,
        application=application,
        reason=reason,
        after={"name": name, "environment": environment, "desired_replicas": desired_replicas},
    )
    return deployment


def _version_snapshot(v: ModelVersion) -> dict[str, Any]:
    return {
        "model": v.registered_model.name,
        "version": v.version,
        "sha256": v.sha256,
        "artifact_uri": v.artifact_uri,
        "size_bytes": v.size_bytes,
        "stage": v.stage,
    }


@transaction.atomic
def register_version(
    *,
    actor: Actor,
    registered_model: RegisteredModel,
    artifact_uri: str,
    sha256: str,
    size_bytes: int,
    trained_at: datetime,
    version: int | None = None,
    memory_bytes: int | None = None,
    format: str = ModelVersion.Format.OTHER,  # noqa: A002 - the domain's word
    framework: str = "",
    data_cutoff: datetime | None = None,
    source_commit: str = "",
    pipeline_url: str = "",
    metrics: dict[str, float] | None = None,
    stage: str = ModelVersion.Stage.NONE,
    reason: str = "",
) -> ModelVersion:
    """Register a new version; its number is the next one unless the pipeline names it."""
    # Lock the parent row so two concurrent registrations cannot pick the same next number.
    RegisteredModel.objects.select_for_update().filter(pk=registered_model.pk).first()
    if version is None:
        last = registered_model.versions.aggregate(m=Max("version"))["m"]
        version = (last or 0) + 1
    elif registered_model.versions.filter(version=version).exists():
        raise DuplicateVersion(
            f"{registered_model.name} already has a version {version}", field="version"
        )
    try:
        with transaction.atomic():
            mv = ModelVersion.objects.create(
                registered_model=registered_model,
                version=version,
                artifact_uri=artifact_uri,
                sha256=sha256.lower(),
                size_bytes=size_bytes,
                memory_bytes=memory_bytes,
                format=format,
                framework=framework,
                trained_at=trained_at,
                data_cutoff=data_cutoff,
                source_commit=source_commit,
                pipeline_url=pipeline_url,
                metrics=metrics or {},
                stage=stage,
                registered_by=actor.user,
            )
    except IntegrityError as exc:
        raise DuplicateVersion(
            f"{registered_model.name} already has a version {version}", field="version"
        ) from exc
    record_audit_event(
        actor=actor,
        kind="version.registered",
        target=mv,
        reason=reason,
        after=_version_snapshot(mv),
    )
    return mv


@transaction.atomic
def set_version_stage(
    *, actor: Actor, version: ModelVersion, stage: str, reason: str = ""
) -> ModelVersion:
    """Move a version to another lifecycle stage (staging, production, archived)."""
    if stage not in ModelVersion.Stage.values:
        raise InvalidInput(f"unknown stage {stage!r}", field="stage")
    before = version.stage
    version.stage = stage
    version.save(update_fields=["stage", "updated_at"])
    record_audit_event(
        actor=actor,
        kind="version.stage_changed",
        target=version,
        reason=reason,
        before={"stage": before},
        after={"stage": stage},
    )
    return version


@transaction.atomic
def move_alias(
    *,
    actor: Actor,
    registered_model: RegisteredModel,
    name: str,
    version: ModelVersion,
    protected: bool | None = None,
    reason: str = "",
) -> ModelAlias:
    """Point alias `name` of a model at `version`, creating it if new; history is kept.

    Protected aliases (and aliases named in settings.PROTECTED_ALIASES) move only for devops.
    """
    if version.registered_model_id != registered_model.pk:
        raise InvalidInput(f"{version} is not a version of {registered_model}", field="version")
    alias = (
        ModelAlias.objects.select_for_update()
        .filter(registered_model=registered_model, name=name)
        .first()
    )
    is_protected = (alias.protected if alias else False) or name in settings.PROTECTED_ALIASES
    if protected:
        is_protected = True
    if is_protected and not actor.is_devops:
        raise PermissionDenied(f"alias {name!r} is protected: only the devops role may move it")
    now = timezone.now()
    before = None
    if alias is None:
        alias = ModelAlias.objects.create(
            registered_model=registered_model, name=name, version=version, protected=is_protected
        )
    else:
        before = {"version": alias.version.version, "protected": alias.protected}
        if alias.version_id == version.pk and alias.protected == is_protected:
            return alias  # nothing moves: no history row, no audit noise
        alias.version = version
        alias.protected = is_protected
        alias.save(update_fields=["version", "protected", "updated_at"])
        AliasAssignment.objects.filter(alias=alias, replaced_at__isnull=True).update(
            replaced_at=now
        )
    AliasAssignment.objects.create(
        alias=alias, version=version, assigned_at=now, assigned_by=actor.user
    )
    record_audit_event(
        actor=actor,
        kind="alias.moved",
        target=alias,
        reason=reason,
        before=before,
        after={"version": version.version, "protected": is_protected},
        at=now,
    )
    return alias
