"""Golden sets and golden-input probes of a deployment's replicas.

A probe sends every golden input meant for the version a replica should serve to that
replica (HTTP in registry.probes, outside any transaction), compares the answers, then
stores one ConsistencyCheck with a ReplicaProbeResult per replica in one transaction.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef, Q
from django.dispatch import Signal
from django.utils import timezone

from .. import probes, status_generation
from ..exceptions import DuplicateVersion, InvalidInput
from ..models import (
    ConsistencyCheck,
    Deployment,
    GoldenSet,
    ModelVersion,
    RegisteredModel,
    Replica,
    ReplicaProbeResult,
)
from ..replica_selectors import active_golden_sets, current_allocations_of, live_replicas
from ..roles import Actor
from .audit import record_audit_event

Verdict = ReplicaProbeResult.Verdict
Outcome = ConsistencyCheck.Outcome

# Sent after every probe that finds bad replicas (inconsistent=True) or all replicas agreeing
# (inconsistent=False); kwargs: check, inconsistent, bad_replicas ({instance_id: verdict}).
# feedback.replica_alerts connects here to raise/resolve alerts: registry never imports
# feedback (STYLE R2).
replica_consistency_changed = Signal()

MAX_GOLDEN_INPUTS = 500
MIN_PROBE_INTERVAL = timedelta(seconds=30)


# --- Golden sets ---


def validate_golden_set(
    *, rule: str, inputs: Any, top_k: int | None, abs_tolerance: float, rel_tolerance: float
) -> None:
    """Raise InvalidInput (field-level) unless the set is usable by the probe."""
    if rule not in GoldenSet.Rule.values:
        raise InvalidInput(f"unknown rule {rule!r}", field="rule")
    if rule == GoldenSet.Rule.TOP_K and not top_k:
        raise InvalidInput("the top_k rule needs top_k ≥ 1", field="top_k")
    if abs_tolerance < 0 or rel_tolerance < 0:
        raise InvalidInput("tolerances cannot be negative", field="abs_tolerance")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInput("give at least one golden input", field="inputs")
    if len(inputs) > MAX_GOLDEN_INPUTS:
        raise InvalidInput(f"at most {MAX_GOLDEN_INPUTS} inputs per set", field="inputs")
    names: set[str] = set()
    for i, item in enumerate(inputs):
        if not isinstance(item, dict) or "input" not in item:
            raise InvalidInput(f'inputs[{i}] must be an object with an "input"', field="inputs")
        name = item.get("name", str(i))
        if not isinstance(name, str) or not name or name in names:
            raise InvalidInput(f"inputs[{i}] needs a unique, non-empty name", field="inputs")
        if set(item) - {"name", "input", "expected"}:
            raise InvalidInput(f"inputs[{i}] has unknown keys", field="inputs")
        names.add(name)


def _normalise_inputs(inputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"name": item.get("name", str(i)), "input": item["input"], "expected": item.get("expected")}
        for i, item in enumerate(inputs)
    ]


def _golden_snapshot(gs: GoldenSet) -> dict[str, Any]:
    return {
        "model": gs.registered_model.name,
        "name": gs.name,
        "rule": gs.rule,
        "abs_tolerance": gs.abs_tolerance,
        "rel_tolerance": gs.rel_tolerance,
        "top_k": gs.top_k,
        "min_overlap": gs.min_overlap,
        "inputs": len(gs.inputs),
        "active": gs.active,
    }


_GOLDEN_FIELDS = (
    "name",
    "description",
    "rule",
    "abs_tolerance",
    "rel_tolerance",
    "top_k",
    "min_overlap",
    "inputs",
    "active",
)


@transaction.atomic
def save_golden_set(
    *,
    actor: Actor,
    registered_model: RegisteredModel,
    name: str,
    inputs: list[dict[str, Any]],
    rule: str = GoldenSet.Rule.EXACT,
    description: str = "",
    abs_tolerance: float = 0.0,
    rel_tolerance: float = 0.0,
    top_k: int | None = None,
    min_overlap: float = 1.0,
    active: bool = True,
    golden_set: GoldenSet | None = None,
    reason: str = "",
) -> GoldenSet:
    """Create a golden set, or replace every field of `golden_set`; audited either way."""
    validate_golden_set(
        rule=rule,
        inputs=inputs,
        top_k=top_k,
        abs_tolerance=abs_tolerance,
        rel_tolerance=rel_tolerance,
    )
    before = _golden_snapshot(golden_set) if golden_set else None
    gs = golden_set or GoldenSet(registered_model=registered_model)
    gs.registered_model = registered_model
    values = {
        "name": name,
        "description": description,
        "rule": rule,
        "abs_tolerance": abs_tolerance,
        "rel_tolerance": rel_tolerance,
        "top_k": top_k,
        "min_overlap": min_overlap,
        "inputs": _normalise_inputs(inputs),
        "active": active,
    }
    for key in _GOLDEN_FIELDS:
        setattr(gs, key, values[key])
    try:
        with transaction.atomic():
            gs.save()
    except IntegrityError as exc:
        raise DuplicateVersion(
            f"{registered_model.name} already has a golden set {name!r}", field="name"
        ) from exc
    record_audit_event(
        actor=actor,
        kind="golden_set.updated" if before else "golden_set.created",
        target=gs,
        reason=reason,
        before=before,
        after=_golden_snapshot(gs),
    )
    return gs


@transaction.atomic
def delete_golden_set(*, actor: Actor, golden_set: GoldenSet, reason: str = "") -> None:
    """Delete a golden set; past checks keep their results."""
    before = _golden_snapshot(golden_set)
    record_audit_event(
        actor=actor, kind="golden_set.deleted", target=golden_set, reason=reason, before=before
    )
    golden_set.delete()


# --- Probing ---


@dataclasses.dataclass(frozen=True)
class ProbeOptions:
    """Knobs of one probe run; defaults come from settings.REPLICA_PROBE_*."""

    timeout: float = 0.0
    max_workers: int = 0
    path: str = ""
    budget: float = 0.0  # seconds for the whole run

    def resolved(self) -> ProbeOptions:
        return ProbeOptions(
            timeout=self.timeout or settings.REPLICA_PROBE_TIMEOUT_S,
            max_workers=self.max_workers or settings.REPLICA_PROBE_CONCURRENCY,
            path=self.path or settings.REPLICA_PROBE_PATH,
            budget=self.budget or settings.REPLICA_PROBE_BUDGET_S,
        )


@dataclasses.dataclass
class _Plan:
    replicas: list[Replica]
    # replica pk -> the allocated version it should serve (None: nothing allocated)
    version_of: dict[int, ModelVersion | None]
    mismatched: set[int]
    sets_of: dict[int, list[GoldenSet]]  # registered model pk -> its active golden sets


def _plan(deployment: Deployment, now: datetime) -> _Plan:
    """Which replicas to probe with which golden sets (three queries)."""
    replicas = live_replicas(deployment_id=deployment.pk, now=now)
    allocations = current_allocations_of(deployment.pk)
    by_sha = {a.model_version.sha256: a.model_version for a in allocations}
    live = [a.model_version for a in allocations if a.role != "shadow"]
    primary = live[0] if live else (allocations[0].model_version if allocations else None)
    version_of: dict[int, ModelVersion | None] = {}
    for replica in replicas:
        # a mismatched replica is still asked the questions of the main version
        version_of[replica.pk] = by_sha.get(replica.reported_sha256, primary)
    model_ids = sorted({a.model_version.registered_model_id for a in allocations})
    sets_of: dict[int, list[GoldenSet]] = {}
    for gs in active_golden_sets(model_ids):
        sets_of.setdefault(gs.registered_model_id, []).append(gs)
    return _Plan(
        replicas=replicas,
        version_of=version_of,
        mismatched={r.pk for r in replicas if r.is_mismatched},
        sets_of=sets_of,
    )


def _rule(gs: GoldenSet) -> probes.Rule:
    return probes.Rule(gs.rule, gs.abs_tolerance, gs.rel_tolerance, gs.top_k, gs.min_overlap)


def _inputs(sets: list[GoldenSet]) -> list[tuple[str, Any, Any]]:
    return [
        (f"{gs.name}/{i['name']}", i["input"], i.get("expected")) for gs in sets for i in gs.inputs
    ]


def _merge(into: probes.Finding | None, more: probes.Finding) -> probes.Finding:
    if into is None:
        return more
    if into.verdict == Verdict.CONSISTENT and more.verdict != Verdict.CONSISTENT:
        into.verdict = more.verdict
    into.first_difference = into.first_difference or more.first_difference
    into.disagreements += more.disagreements
    return into


def _findings(plan: _Plan, options: ProbeOptions) -> tuple[dict[int, probes.Finding], int]:
    """Send the inputs and compare, group by group; returns findings and inputs sent."""
    targets = []
    for replica in plan.replicas:
        version = plan.version_of[replica.pk]
        sets = plan.sets_of.get(version.registered_model_id, []) if version else []
        if sets:
            targets.append(
                probes.Target(replica.pk, replica.url, [(n, p) for n, p, _ in _inputs(sets)])
            )
    answers = probes.probe_targets(
        targets,
        path=options.path,
        timeout=options.timeout,
        max_workers=options.max_workers,
        budget=options.budget,
    )
    findings: dict[int, probes.Finding] = {}
    groups: dict[int, list[int]] = {}
    versions: dict[int, ModelVersion] = {}
    for replica_pk in answers:
        version = plan.version_of[replica_pk]
        assert version is not None  # only replicas with golden sets were targets
        versions[version.pk] = version
        groups.setdefault(version.pk, []).append(replica_pk)
    for version_pk, pks in groups.items():
        version = versions[version_pk]
        group_answers = {pk: answers[pk] for pk in pks}
        voters = {pk for pk in pks if pk not in plan.mismatched}
        for gs in plan.sets_of[version.registered_model_id]:
            found = probes.compare_group(
                group_answers, inputs=_inputs([gs]), rule=_rule(gs), voters=voters
            )
            for pk, finding in found.items():
                findings[pk] = _merge(findings.get(pk), finding)
    sent = sum(len(a) for a in answers.values())  # requests attempted, faults included
    for pk in plan.mismatched:
        finding = findings.setdefault(pk, probes.Finding(verdict=Verdict.MISMATCHED))
        if finding.verdict != Verdict.CONSISTENT:
            finding.detail = f"{finding.verdict}: {finding.detail}".strip(": ")
        finding.verdict = Verdict.MISMATCHED
    return findings, sent


def _outcome(findings: dict[int, probes.Finding], sent: int) -> str:
    verdicts = {f.verdict for f in findings.values()}
    if verdicts & set(ReplicaProbeResult.BAD_VERDICTS):
        return Outcome.INCONSISTENT
    if not sent:
        return Outcome.SKIPPED
    if verdicts & set(ReplicaProbeResult.FAULT_VERDICTS):
        return Outcome.INCOMPLETE
    return Outcome.CONSISTENT


def probe_deployment(
    *,
    deployment: Deployment,
    actor: Actor,
    trigger: str = ConsistencyCheck.Trigger.SCHEDULE,
    options: ProbeOptions | None = None,
) -> ConsistencyCheck:
    """Probe every live replica of `deployment` with its golden inputs and store the verdicts.

    Network faults become verdicts, never exceptions. No transaction is held during HTTP.
    """
    options = (options or ProbeOptions()).resolved()
    started = timezone.now()
    plan = _plan(deployment, started)
    findings, sent = _findings(plan, options)
    return _store_check(
        deployment=deployment,
        plan=plan,
        findings=findings,
        sent=sent,
        started=started,
        trigger=trigger,
        actor=actor,
    )


@transaction.atomic
def _store_check(
    *,
    deployment: Deployment,
    plan: _Plan,
    findings: dict[int, probes.Finding],
    sent: int,
    started: datetime,
    trigger: str,
    actor: Actor,
) -> ConsistencyCheck:
    now = timezone.now()
    outcome = _outcome(findings, sent)
    counts: dict[str, int] = {}
    for finding in findings.values():
        counts[finding.verdict] = counts.get(finding.verdict, 0) + 1
    note = "" if sent else "no golden inputs for the allocated versions, or no live replica"
    check = ConsistencyCheck.objects.create(
        deployment=deployment,
        started_at=started,
        finished_at=now,
        outcome=outcome,
        trigger=trigger,
        triggered_by=actor.label[:150],
        inputs_sent=sent,
        counts=counts,
        note=note,
    )
    by_pk = {r.pk: r for r in plan.replicas}
    ReplicaProbeResult.objects.bulk_create(
        [
            ReplicaProbeResult(
                consistency_check=check,
                replica_id=pk,
                verdict=f.verdict,
                latency_ms=f.latency_ms,
                answered=f.answered,
                reported_sha256=f.sha256 or by_pk[pk].reported_sha256,
                reported_version_id=by_pk[pk].reported_version_id,
                first_difference=f.first_difference,
                detail=f.detail[:1000],
            )
            for pk, f in sorted(findings.items())
        ]
    )
    previous_bad = {
        r.instance_id: r.last_probe_verdict
        for r in plan.replicas
        if r.last_probe_verdict in ReplicaProbeResult.BAD_VERDICTS
    }
    for verdict in {f.verdict for f in findings.values()}:
        pks = [pk for pk, f in findings.items() if f.verdict == verdict]
        Replica.objects.filter(pk__in=pks).update(last_probe_verdict=verdict, last_probe_at=now)
    status_generation.bump([deployment.application_id])  # verdicts: updates send no signal
    bad = {
        by_pk[pk].instance_id: f.verdict
        for pk, f in findings.items()
        if f.verdict in ReplicaProbeResult.BAD_VERDICTS
    }
    if bad:
        report_inconsistency(check=check, bad_replicas=bad, changed=bad != previous_bad)
    elif outcome == Outcome.CONSISTENT:
        report_consistency_restored(check=check, previous_bad=previous_bad)
    return check


# --- Reporting (the seam towards alerting) ---


def report_inconsistency(
    *, check: ConsistencyCheck, bad_replicas: dict[str, str], changed: bool = True
) -> None:
    """Report that replicas of a deployment disagree or serve the wrong artifact.

    The audit event is written only when the set of bad replicas `changed`, so a standing
    problem is one event, not one per probe; the signal goes out on every such check, and
    its receivers (the feedback app's alerting, which deduplicates) run in this transaction.
    """
    deployment = check.deployment
    if changed:
        names = ", ".join(f"{k} ({v})" for k, v in sorted(bad_replicas.items()))
        record_audit_event(
            actor=Actor.system("probe"),
            kind="replica.inconsistent",
            target=deployment,
            application=deployment.application,
            reason=f"consistency check {check.pk}: {names}",
            after={"check": check.pk, "bad_replicas": bad_replicas, "counts": check.counts},
        )
    replica_consistency_changed.send(
        sender=ConsistencyCheck, check=check, inconsistent=True, bad_replicas=bad_replicas
    )


def report_consistency_restored(*, check: ConsistencyCheck, previous_bad: dict[str, str]) -> None:
    """Report that every probed replica agrees (ends what report_inconsistency began).

    Audited only when some replica was bad before; the signal (resolve, idempotent) always.
    """
    deployment = check.deployment
    if previous_bad:
        record_audit_event(
            actor=Actor.system("probe"),
            kind="replica.consistent",
            target=deployment,
            application=deployment.application,
            reason=f"consistency check {check.pk}: replicas agree again",
            before={"bad_replicas": previous_bad},
            after={"check": check.pk, "counts": check.counts},
        )
    replica_consistency_changed.send(
        sender=ConsistencyCheck, check=check, inconsistent=False, bad_replicas={}
    )


# --- Scheduling ---


def claim_due_probes(*, now: datetime | None = None) -> list[int]:
    """Deployments whose probe is due, each claimed by moving its next_probe_at forward.

    The claim is a conditional UPDATE, so two dispatchers (a redelivered beat message)
    never enqueue the same deployment twice for one period.
    """
    now = now or timezone.now()
    probeable = Replica.objects.filter(deployment_id=OuterRef("pk")).exclude(url="")
    due = (
        Deployment.objects.filter(probe_interval__isnull=False)
        .filter(Q(next_probe_at__isnull=True) | Q(next_probe_at__lte=now))
        .filter(Exists(probeable))
        .values_list("pk", "next_probe_at", "probe_interval")
    )
    claimed: list[int] = []
    for pk, next_at, interval in due:
        unchanged = Q(next_probe_at=next_at) if next_at else Q(next_probe_at__isnull=True)
        won = Deployment.objects.filter(unchanged, pk=pk).update(
            next_probe_at=now + max(interval, MIN_PROBE_INTERVAL)
        )
        if won:  # else another dispatcher claimed it first
            claimed.append(pk)
    return claimed


def dispatch_due_probes(*, enqueue: Callable[[int], Any], now: datetime | None = None) -> list[int]:
    """Claim due deployments and hand each to `enqueue` (the probe task's delay)."""
    claimed = claim_due_probes(now=now)
    for pk in claimed:
        enqueue(pk)
    return claimed


def prune_consistency_checks(*, older_than: timedelta, now: datetime | None = None) -> int:
    """Delete checks (and their results) started before now - older_than; returns checks deleted."""
    cutoff = (now or timezone.now()) - older_than
    old = ConsistencyCheck.objects.filter(started_at__lt=cutoff)
    # the status shows each deployment's latest check: it goes only where no newer one stays
    kept = ConsistencyCheck.objects.filter(deployment_id=OuterRef("pk"), started_at__gte=cutoff)
    losing = list(
        Deployment.objects.filter(Exists(old.filter(deployment_id=OuterRef("pk"))))
        .exclude(Exists(kept))
        .values_list("application_id", flat=True)
    )
    deleted, per_model = old.delete()
    status_generation.bump(losing)  # after the delete (or its commit)
    return per_model.get(ConsistencyCheck._meta.label, 0)
