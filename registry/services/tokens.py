"""API tokens: created, revoked, authenticated."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from ..exceptions import InvalidInput
from ..models import (
    ApiToken,
)
from ..roles import Actor
from .audit import record_audit_event

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
