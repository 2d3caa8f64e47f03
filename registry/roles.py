"""Roles are Django groups; an Actor is whoever a write is attributed to in the audit log."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

DEVOPS = "devops"
PRODUCT = "product"
VIEWER = "viewer"
ROLES = (DEVOPS, PRODUCT, VIEWER)


def has_role(user: Any, role: str) -> bool:
    """True for superusers and members of the group `role` (group names cached per request)."""
    if user is None or not getattr(user, "is_authenticated", False):
        return False
    if user.is_superuser:
        return True
    return role in role_names(user)


def role_names(user: Any) -> set[str]:
    """The names of the user's groups: read once per user object (a remembered API token
    brings them along, registry.services.tokens)."""
    names = getattr(user, "_role_names", None)
    if names is None:
        names = set(user.groups.values_list("name", flat=True))
        user._role_names = names
    return names


def is_devops(user: Any) -> bool:
    return has_role(user, DEVOPS)


def can_file_feedback(user: Any) -> bool:
    return has_role(user, DEVOPS) or has_role(user, PRODUCT)


@dataclass(frozen=True)
class Actor:
    """The user (if any) and the label written into audit events."""

    user: AbstractBaseUser | None
    label: str

    @classmethod
    def system(cls, label: str = "system") -> Actor:
        return cls(user=None, label=label)

    @classmethod
    def of(cls, user: Any, token: Any = None) -> Actor:
        if user is None or not getattr(user, "is_authenticated", False):
            return cls.system("anonymous")
        label = user.get_username()
        if token is not None:
            label = f"{label} (token {token.name})"
        return cls(user=user, label=label)

    @property
    def is_devops(self) -> bool:
        return self.user is None or is_devops(self.user)
