"""Every write to the registry: one function per use case, transactional and audited.

A package because it passed ~400 lines (STYLE R1); import from `registry.services`.
"""

from .audit import record_audit_event
from .catalog import (
    create_application,
    create_deployment,
    create_registered_model,
    move_alias,
    register_version,
    set_version_stage,
    update_application,
)
from .replicas import record_heartbeat
from .rollouts import (
    ROLLOUT_ACTIONS,
    abort_rollout,
    advance_rollout,
    create_rollout,
    pause_rollout,
    promote_rollout,
    resume_rollout,
    rollback_rollout,
    start_rollout,
)
from .tokens import authenticate_token, create_api_token, revoke_api_token
from .traffic import AllocationSpec, set_allocation, validate_allocation

__all__ = [
    "ROLLOUT_ACTIONS",
    "abort_rollout",
    "advance_rollout",
    "create_rollout",
    "pause_rollout",
    "promote_rollout",
    "resume_rollout",
    "rollback_rollout",
    "start_rollout",
    "AllocationSpec",
    "authenticate_token",
    "create_api_token",
    "create_application",
    "create_deployment",
    "create_registered_model",
    "move_alias",
    "record_audit_event",
    "record_heartbeat",
    "register_version",
    "revoke_api_token",
    "set_allocation",
    "set_version_stage",
    "update_application",
    "validate_allocation",
]
