"""Replica probes -> alerts: fire "replica-probe-mismatch" while replicas disagree.

registry.services.probes sends `replica_consistency_changed` after each probe that finds
bad replicas (divergent answers or an unallocated artifact) or finds them all agreeing;
this receiver turns that into the deduplicated alert of the deployment, so the registry
app never imports feedback (STYLE R2). Connected in FeedbackConfig.ready().
"""

from __future__ import annotations

from typing import Any

from registry.models import ConsistencyCheck

from .services.alerts import raise_alert, resolve_alert

RULE_KEY = "replica-probe-mismatch"


def alert_on_replica_consistency(
    sender: Any,
    *,
    check: ConsistencyCheck,
    inconsistent: bool,
    bad_replicas: dict[str, str],
    **kwargs: Any,
) -> None:
    """Raise (or refresh) the deployment's probe alert, or resolve it when replicas agree."""
    target_key = f"deployment:{check.deployment_id}"
    if not inconsistent:
        resolve_alert(
            rule_key=RULE_KEY,
            target_key=target_key,
            reason=f"consistency check {check.pk}: all probed replicas agree",
            at=check.finished_at,
        )
        return
    names = ", ".join(f"{name} ({verdict})" for name, verdict in sorted(bad_replicas.items()))
    raise_alert(
        rule_key=RULE_KEY,
        target_key=target_key,
        summary=f"{check.deployment}: {len(bad_replicas)} replica(s) inconsistent: {names}",
        evidence={"check": check.pk, "bad_replicas": bad_replicas, "counts": check.counts},
        deployment=check.deployment,
        value=float(len(bad_replicas)),
        at=check.finished_at,
    )
