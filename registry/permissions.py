"""API permissions: a token must carry the scope, and its user the role, that an action needs.

Session users (the browser) have every scope; their roles still apply.
"""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request

from .models import ApiToken
from .roles import DEVOPS, PRODUCT, has_role


def token_has_scope(request: Request, scope: str) -> bool:
    token = request.auth
    if isinstance(token, ApiToken):
        return scope in token.scopes
    return True  # session authentication: scopes do not apply


class ScopedPermission(BasePermission):
    """Reads need scope `read`; writes need `write_scope` and one of `write_roles`."""

    write_scope: str = ApiToken.Scope.REGISTRY_WRITE
    write_roles: tuple[str, ...] = (DEVOPS,)

    def has_permission(self, request: Request, view: Any) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False
        if request.method in SAFE_METHODS:
            return token_has_scope(request, ApiToken.Scope.READ)
        scope = getattr(view, "write_scope", self.write_scope)
        roles = getattr(view, "write_roles", self.write_roles)
        return token_has_scope(request, scope) and any(has_role(request.user, r) for r in roles)


class ReadScope(ScopedPermission):
    """Default: any authenticated reader; writes need registry:write and devops."""


class RegistryWrite(ScopedPermission):
    write_scope = ApiToken.Scope.REGISTRY_WRITE
    write_roles = (DEVOPS,)


class FeedbackWrite(ScopedPermission):
    write_scope = ApiToken.Scope.FEEDBACK_WRITE
    write_roles = (DEVOPS, PRODUCT)


class ReplicaWrite(ScopedPermission):
    write_scope = ApiToken.Scope.REPLICA_WRITE
    write_roles = (DEVOPS,)
