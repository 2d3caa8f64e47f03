"""Every write to the registry: one function per use case, transactional and audited."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from .exceptions import DuplicateVersion, InvalidInput, PermissionDenied
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
    TrafficAllocation,
)
from .roles import Actor

# --- Audit ---


def record_audit_event(
    *,
    actor: Actor,
    kind: str,
    target: Any,
    application: Application | None = None,
    reason: str = "",
    before: Any = None,
    after: Any = None,
    at: datetime | None = None,
) -> AuditEvent:
    """Append one audit event; callers run it inside the transaction of the change itself."""
    return AuditEvent.objects.create(
        at=at or timezone.now(),
        actor=actor.user,
        actor_label=actor.label[:150],
        kind=kind,
        application=application,
        target_type=type(target).__name__,
        target_id=str(getattr(target, "pk", "")),
        target_repr=str(target)[:255],
        reason=reason,
        before=before,
        after=after,
    )


# --- Applications, models, deployments ---


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


# --- Versions ---


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


# --- Aliases ---


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


# --- Traffic allocation ---


@dataclass(frozen=True)
class AllocationSpec:
    """One row of a desired traffic split."""

    model_version: ModelVersion
    weight: int
    role: str = TrafficAllocation.Role.CONTROL


def validate_allocation(specs: Sequence[AllocationSpec]) -> None:
    """Raise InvalidInput unless live weights sum to 100 and each version appears once."""
    if not specs:
        raise InvalidInput("a deployment needs at least one allocation", field="allocations")
    seen: set[int] = set()
    for spec in specs:
        if spec.model_version.pk in seen:
            raise InvalidInput(
                f"{spec.model_version} appears twice in the allocation", field="allocations"
            )
        seen.add(spec.model_version.pk)
        if not 0 <= spec.weight <= 100:
            raise InvalidInput("weights are percentages between 0 and 100", field="allocations")
        if spec.role not in TrafficAllocation.Role.values:
            raise InvalidInput(f"unknown role {spec.role!r}", field="allocations")
    live = sum(s.weight for s in specs if s.role != TrafficAllocation.Role.SHADOW)
    if live != 100:
        raise InvalidInput(
            f"weights of non-shadow allocations must sum to 100, got {live}", field="allocations"
        )


def _allocation_snapshot(rows: Iterable[TrafficAllocation]) -> list[dict[str, Any]]:
    return [
        {
            "model": r.model_version.registered_model.name,
            "version": r.model_version.version,
            "weight": r.weight,
            "role": r.role,
        }
        for r in rows
    ]


@transaction.atomic
def set_allocation(
    *,
    actor: Actor,
    deployment: Deployment,
    allocations: Sequence[AllocationSpec],
    reason: str = "",
    kind: str = "allocation.changed",
    at: datetime | None = None,
) -> list[TrafficAllocation]:
    """Replace a deployment's traffic split: close the current rows, open the new ones."""
    validate_allocation(allocations)
    # Serialize concurrent changes of the same deployment.
    Deployment.objects.select_for_update().filter(pk=deployment.pk).first()
    now = at or timezone.now()
    current = list(
        deployment.allocations.filter(valid_to__isnull=True).select_related(
            "model_version__registered_model"
        )
    )
    before = _allocation_snapshot(current)
    TrafficAllocation.objects.filter(pk__in=[r.pk for r in current]).update(valid_to=now)
    rows = TrafficAllocation.objects.bulk_create(
        [
            TrafficAllocation(
                deployment=deployment,
                model_version=s.model_version,
                weight=s.weight,
                role=s.role,
                valid_from=now,
            )
            for s in allocations
        ]
    )
    record_audit_event(
        actor=actor,
        kind=kind,
        target=deployment,
        application=deployment.application,
        reason=reason,
        before=before,
        after=_allocation_snapshot(rows),
        at=now,
    )
    return rows


# --- Replicas ---


def record_heartbeat(
    *,
    deployment: Deployment,
    instance_id: str,
    host: str = "",
    url: str = "",
    model_version: ModelVersion | None = None,
    sha256: str = "",
    started_at: datetime | None = None,
    at: datetime | None = None,
) -> None:
    """Upsert what a replica reports, in ONE statement (no read-modify-write race).

    Heartbeats are frequent and concurrent, so they are not audited; the replica's first
    appearance is visible from its created_at.
    """
    now = at or timezone.now()
    if model_version is not None and not sha256:
        sha256 = model_version.sha256
    Replica.objects.bulk_create(
        [
            Replica(
                deployment=deployment,
                instance_id=instance_id,
                host=host,
                url=url,
                reported_version=model_version,
                reported_sha256=sha256.lower(),
                started_at=started_at,
                last_heartbeat_at=now,
                created_at=now,
                updated_at=now,
            )
        ],
        update_conflicts=True,
        unique_fields=["deployment", "instance_id"],
        update_fields=[
            "host",
            "url",
            "reported_version",
            "reported_sha256",
            "started_at",
            "last_heartbeat_at",
            "updated_at",
        ],
    )


# --- API tokens ---

TOKEN_PREFIX = "mo_"


def _hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


@transaction.atomic
def create_api_token(
    *,
    actor: Actor,
    user: Any,
    name: str,
    scopes: Sequence[str],
    expires_at: datetime | None = None,
    ttl: timedelta | None = None,
) -> tuple[ApiToken, str]:
    """Create a token; returns the row and the secret, which is never stored or shown again."""
    unknown = sorted(set(scopes) - set(ApiToken.Scope.values))
    if unknown:
        raise InvalidInput(f"unknown scope(s): {', '.join(unknown)}", field="scopes")
    if not scopes:
        raise InvalidInput("a token needs at least one scope", field="scopes")
    if expires_at is None:
        expires_at = timezone.now() + (ttl or settings.API_TOKEN_DEFAULT_TTL)
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=user,
        name=name,
        prefix=raw[:10],
        key_hash=_hash_token(raw),
        scopes=sorted(set(scopes)),
        expires_at=expires_at,
    )
    record_audit_event(
        actor=actor,
        kind="token.created",
        target=token,
        after={"user": user.get_username(), "scopes": token.scopes, "expires_at": str(expires_at)},
    )
    return token, raw


@transaction.atomic
def revoke_api_token(*, actor: Actor, token: ApiToken, reason: str = "") -> ApiToken:
    """Revoke a token at once; it stays listed for the record."""
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        record_audit_event(actor=actor, kind="token.revoked", target=token, reason=reason)
    return token


def authenticate_token(raw: str) -> ApiToken | None:
    """The live token for `raw`, or None; records last use at most once a minute."""
    token = (
        ApiToken.objects.select_related("user")
        .filter(key_hash=_hash_token(raw), revoked_at__isnull=True)
        .first()
    )
    now = timezone.now()
    if token is None or (token.expires_at and token.expires_at <= now):
        return None
    if not token.user.is_active:
        return None
    if token.last_used_at is None or now - token.last_used_at > timedelta(minutes=1):
        # a conditional single UPDATE: cheap, and concurrent requests cannot conflict
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    return token
