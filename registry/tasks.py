"""Thin Celery tasks over the registry's services (routed to the `probes` queue by name)."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from .models import ConsistencyCheck, Deployment
from .roles import Actor
from .services.probes import dispatch_due_probes, probe_deployment, prune_consistency_checks


@shared_task(ignore_result=True)
def probe_deployment_task(
    deployment_id: int,
    trigger: str = ConsistencyCheck.Trigger.SCHEDULE,
    triggered_by: str = "probe",
) -> str:
    """Probe one deployment's replicas with golden inputs; a redelivery just probes again."""
    deployment = Deployment.objects.select_related("application").filter(pk=deployment_id).first()
    if deployment is None:
        return "gone"  # deleted since it was enqueued
    actor = Actor.system(triggered_by)
    return probe_deployment(deployment=deployment, actor=actor, trigger=trigger).outcome


@shared_task(ignore_result=True)
def probe_due_deployments_task() -> int:
    """Beat dispatcher: enqueue a probe for every deployment whose interval has elapsed."""
    claimed = dispatch_due_probes(enqueue=probe_deployment_task.delay)
    prune_consistency_checks(older_than=settings.REPLICA_PROBE_RETENTION)
    return len(claimed)
