"""API tokens: created, revoked, authenticated."""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import DEFAULT_DB_ALIAS, transaction
from django.db.models.signals import m2m_changed, post_delete, post_save
from django.utils import timezone

from .. import status_generation
from ..exceptions import InvalidInput
from ..models import (
    ApiToken,
)
from ..roles import Actor, role_names
from .audit import record_audit_event

log = logging.getLogger(__name__)

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
    """The live token for `raw`, or None; records last use at most once a minute.

    Tokens are remembered in the shared cache (see `_remembered`), so an API request
    usually reads no token row; revoking, re-scoping or deactivating applies at once.
    """
    key_hash = _hash_token(raw)
    token, generation = _remembered(key_hash)
    if token is None:
        token = (
            ApiToken.objects.select_related("user")
            .filter(key_hash=key_hash, revoked_at__isnull=True)
            .first()
        )
        if token is not None and generation is not None:
            _remember(key_hash, token, generation)
    now = timezone.now()
    if token is None or (token.expires_at and token.expires_at <= now):
        return None
    if not token.user.is_active:
        return None
    if token.last_used_at is None or now - token.last_used_at > timedelta(minutes=1):
        # a conditional single UPDATE: cheap, and concurrent requests cannot conflict
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
        if generation is not None:
            _remember(key_hash, token, generation)
    return token


# --- Remembered tokens ---
#
# The token row and its user, kept in the shared cache (Redis, or files every process
# reads) under a generation that every save or delete of any token or user replaces, after
# commit (registry.status_generation: a generation read before the database, so a lookup
# racing a revocation can only store what the new generation orphans). Expiry is checked
# on every request. The user is kept without its password hash, and rebuilt with that
# field deferred: saving it can never blank the password. The user's roles (group names)
# are kept too: adding or removing a user's group, or renaming or deleting a group, replaces
# the generation like any other change.

_TOKEN_FIELDS = [f.attname for f in ApiToken._meta.concrete_fields]


def _user_fields() -> list[str]:
    return [f.attname for f in get_user_model()._meta.concrete_fields if f.attname != "password"]


def token_cache_s() -> int:
    """Longest life of a remembered token (API_TOKEN_CACHE_S, default 300); 0: off."""
    return int(getattr(settings, "API_TOKEN_CACHE_S", 300))


def _generation_key() -> str:
    return f"{status_generation.key_prefix()}:tokens:v2:gen"


def _token_key(key_hash: str) -> str:
    return f"{status_generation.key_prefix()}:tokens:v2:{key_hash}"


def _remembered(key_hash: str) -> tuple[ApiToken | None, str | None]:
    """(the remembered token or None, the generation to remember a token under or None)."""
    if token_cache_s() <= 0:
        return None, None
    try:
        found = status_generation.get_many([_token_key(key_hash), _generation_key()])
        generation = status_generation.read_or_create(
            _generation_key(), found.get(_generation_key())
        )
    except Exception:
        log.warning("token cache unavailable; reading tokens from the database", exc_info=True)
        return None, None
    entry = found.get(_token_key(key_hash))
    if entry is None or entry[0] != generation:
        return None, generation
    _, token_values, user_values, roles = entry
    user = get_user_model().from_db(DEFAULT_DB_ALIAS, _user_fields(), user_values)
    user._role_names = set(roles)  # what roles.has_role would otherwise query
    token = ApiToken.from_db(DEFAULT_DB_ALIAS, _TOKEN_FIELDS, token_values)
    token.user = user
    return token, generation


def prefetch_keys(authorization: str) -> list[str]:
    """What authenticating this Authorization header will read first (for
    status_generation.prefetched, so a view can fetch them with its own keys)."""
    parts = authorization.split()
    if token_cache_s() <= 0 or len(parts) != 2 or parts[0].lower() != "bearer":
        return []
    return [_token_key(_hash_token(parts[1])), _generation_key()]


def _remember(key_hash: str, token: ApiToken, generation: str) -> None:
    entry = (
        generation,
        tuple(getattr(token, f) for f in _TOKEN_FIELDS),
        tuple(getattr(token.user, f) for f in _user_fields()),
        tuple(sorted(role_names(token.user))),
    )
    try:
        status_generation.store().set(_token_key(key_hash), entry, timeout=token_cache_s())
    except Exception:
        log.warning("token cache: could not remember a token", exc_info=True)


def forget_remembered_tokens(*_: Any, update_fields: Any = None, **__: Any) -> None:
    """Receiver: a token or user changed; every remembered token is dropped."""
    if update_fields is not None and set(update_fields) <= {"last_login"}:
        return  # a login changes nothing a token check reads
    status_generation.bump_keys([_generation_key()])


def _forget_on_membership_change(*_: Any, action: str = "", **__: Any) -> None:
    """Receiver (m2m_changed of User.groups, from either side): a role was given or taken."""
    if action in ("post_add", "post_remove", "post_clear"):
        status_generation.bump_keys([_generation_key()])


def connect_token_cache() -> None:
    """Wire the receivers (RegistryConfig.ready): every process that can change a token, a
    user or a user's roles must drop remembered ones, the admin's included."""
    for signal in (post_save, post_delete):
        for model in (ApiToken, get_user_model(), Group):
            signal.connect(
                forget_remembered_tokens,
                sender=model,
                dispatch_uid=f"token-cache-{signal is post_save}-{model._meta.label_lower}",
                weak=False,
            )
    m2m_changed.connect(
        _forget_on_membership_change,
        sender=get_user_model().groups.through,
        dispatch_uid="token-cache-user-groups",
        weak=False,
    )
