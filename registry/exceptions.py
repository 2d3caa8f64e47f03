"""Domain errors of the registry. The API's exception handler maps them once (STYLE R12)."""


class DomainError(Exception):
    """A request that is well-formed but conflicts with the current state: HTTP 409."""

    status_code = 409
    code = "conflict"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidInput(DomainError):
    """Input that a service refuses on its merits (a field-level 400)."""

    status_code = 400
    code = "invalid"


class NotFound(DomainError):
    status_code = 404
    code = "not_found"


class PermissionDenied(DomainError):
    status_code = 403
    code = "permission_denied"


class DuplicateVersion(DomainError):
    code = "duplicate"


class IllegalTransition(DomainError):
    code = "illegal_transition"
