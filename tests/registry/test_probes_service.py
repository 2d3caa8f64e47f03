from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from registry.exceptions import DuplicateVersion, InvalidInput
from registry.models import AuditEvent, ConsistencyCheck, GoldenSet, Replica, ReplicaProbeResult
from registry.services import record_heartbeat
from registry.services.probes import (
    ProbeOptions,
    claim_due_probes,
    delete_golden_set,
    dispatch_due_probes,
    probe_deployment,
    prune_consistency_checks,
    replica_consistency_changed,
    save_golden_set,
)
from tests.registry.model_servers import model_a, model_servers_fixture  # noqa: F401

FAST = ProbeOptions(timeout=0.3, max_workers=4)
GOLDEN = [{"name": f"x{x}", "input": {"x": x}} for x in range(3)]


@pytest.fixture
def serving(traffic_allocation_factory, system_actor):
    """A deployment serving one version, with a golden set for its model."""
    allocation = traffic_allocation_factory()
    save_golden_set(
        actor=system_actor,
        registered_model=allocation.model_version.registered_model,
        name="smoke",
        inputs=GOLDEN,
    )
    return allocation


def add_replicas(allocation, *urls, sha256=None):
    for i, url in enumerate(urls):
        record_heartbeat(
            deployment=allocation.deployment,
            instance_id=f"pod-{i}",
            host=f"10.0.0.{i}",
            url=url,
            sha256=sha256[i] if sha256 else allocation.model_version.sha256,
        )


def verdicts(check):
    return {
        r.replica.instance_id: r.verdict
        for r in check.results.select_related("replica").order_by("replica__instance_id")
    }


def run(allocation, system_actor):
    return probe_deployment(deployment=allocation.deployment, actor=system_actor, options=FAST)


# --- probing ---


def test_probe_deployment_finds_the_replica_serving_another_model(
    serving, model_servers, system_actor
):
    servers = model_servers("A", "A", "B")
    add_replicas(serving, *(s.url for s in servers))

    check = run(serving, system_actor)

    assert check.outcome == ConsistencyCheck.Outcome.INCONSISTENT
    assert verdicts(check) == {"pod-0": "consistent", "pod-1": "consistent", "pod-2": "divergent"}
    odd = check.results.get(replica__instance_id="pod-2")
    assert odd.first_difference["input"] == "smoke/x0"
    assert odd.first_difference["got"] != odd.first_difference["expected"]
    assert odd.latency_ms is not None
    assert Replica.objects.get(instance_id="pod-2").last_probe_verdict == "divergent"


def test_probe_deployment_of_agreeing_replicas_is_consistent(serving, model_servers, system_actor):
    servers = model_servers("A", "A")
    add_replicas(serving, *(s.url for s in servers))

    check = run(serving, system_actor)

    assert check.outcome == ConsistencyCheck.Outcome.CONSISTENT
    assert check.inputs_sent == 6
    assert check.counts == {"consistent": 2}
    assert not AuditEvent.objects.filter(kind="replica.inconsistent").exists()


def test_probe_deployment_reports_faults_as_such_not_as_disagreement(
    serving, model_servers, system_actor
):
    good, stopped, slow, failing, garbage = model_servers("A", "A", "slow", "500", "garbage")
    stopped.stop()
    add_replicas(serving, good.url, stopped.url, slow.url, failing.url, garbage.url)

    check = run(serving, system_actor)

    assert verdicts(check) == {
        "pod-0": "consistent",
        "pod-1": "unreachable",
        "pod-2": "timeout",
        "pod-3": "error",
        "pod-4": "bad_response",
    }
    assert check.outcome == ConsistencyCheck.Outcome.INCOMPLETE
    assert not AuditEvent.objects.filter(kind="replica.inconsistent").exists()


def test_probe_deployment_compares_with_expected_outputs(
    traffic_allocation_factory, model_servers, system_actor
):
    allocation = traffic_allocation_factory()
    wrong = {"label": "even", "score": 99.0}
    save_golden_set(
        actor=system_actor,
        registered_model=allocation.model_version.registered_model,
        name="labelled",
        rule=GoldenSet.Rule.TOLERANCE,
        abs_tolerance=0.01,
        inputs=[{"name": "one", "input": {"x": 0}, "expected": wrong}],
    )
    add_replicas(allocation, *(s.url for s in model_servers("A", "A")))

    check = run(allocation, system_actor)

    assert set(verdicts(check).values()) == {"divergent"}
    result = check.results.first()
    assert result.first_difference["reference"] == "expected"
    assert result.first_difference["got"] == model_a({"x": 0})


def test_probe_deployment_marks_replica_with_unallocated_artifact_mismatched(
    serving, model_servers, model_version_factory, system_actor
):
    stranger = model_version_factory()
    servers = model_servers("A", "A", "A")
    own = serving.model_version.sha256
    add_replicas(serving, *(s.url for s in servers), sha256=[own, own, stranger.sha256])

    check = run(serving, system_actor)

    assert verdicts(check)["pod-2"] == "mismatched"
    assert check.outcome == ConsistencyCheck.Outcome.INCONSISTENT


def test_probe_deployment_without_golden_set_is_skipped(
    traffic_allocation_factory, model_servers, system_actor
):
    allocation = traffic_allocation_factory()
    add_replicas(allocation, *(s.url for s in model_servers("A")))

    check = run(allocation, system_actor)

    assert check.outcome == ConsistencyCheck.Outcome.SKIPPED
    assert check.results.count() == 0


def test_probe_deployment_leaves_stale_replicas_out(serving, model_servers, system_actor):
    (server,) = model_servers("A")
    with time_machine.travel(timezone.now() - timedelta(hours=1)):
        add_replicas(serving, "http://127.0.0.1:9")  # gone an hour ago
    record_heartbeat(
        deployment=serving.deployment,
        instance_id="fresh",
        url=server.url,
        sha256=serving.model_version.sha256,
    )

    check = run(serving, system_actor)

    assert verdicts(check) == {"fresh": "consistent"}


def test_probe_deployment_compares_canary_replicas_among_themselves(
    serving, traffic_allocation_factory, model_version_factory, model_servers, system_actor
):
    canary_version = model_version_factory(registered_model=serving.model_version.registered_model)
    traffic_allocation_factory(deployment=serving.deployment, model_version=canary_version)
    servers = model_servers("A", "A", "B")
    shas = [serving.model_version.sha256] * 2 + [canary_version.sha256]
    add_replicas(serving, *(s.url for s in servers), sha256=shas)

    check = run(serving, system_actor)

    # the lone canary replica answers differently, as a new version may: no verdict against it
    assert set(verdicts(check).values()) == {"consistent"}


# --- reporting ---


def test_inconsistency_is_recorded_once_while_it_lasts(serving, model_servers, system_actor):
    servers = model_servers("A", "A", "B")
    add_replicas(serving, *(s.url for s in servers))
    received = []
    receiver = lambda **kw: received.append(kw["inconsistent"])  # noqa: E731
    replica_consistency_changed.connect(receiver)

    try:
        run(serving, system_actor)
        run(serving, system_actor)
    finally:
        replica_consistency_changed.disconnect(receiver)

    event = AuditEvent.objects.get(kind="replica.inconsistent")
    assert event.actor_label == "probe"
    assert event.after["bad_replicas"] == {"pod-2": "divergent"}
    assert received == [True, True]  # alerting deduplicates; the audit log gets one event


def test_recovery_is_recorded_when_replicas_agree_again(serving, model_servers, system_actor):
    a1, a2, b = model_servers("A", "A", "B")
    add_replicas(serving, a1.url, a2.url, b.url)
    run(serving, system_actor)
    add_replicas(serving, a1.url, a2.url, a1.url)  # pod-2 redeployed with the right model

    check = run(serving, system_actor)

    assert check.outcome == ConsistencyCheck.Outcome.CONSISTENT
    assert AuditEvent.objects.filter(kind="replica.consistent").count() == 1


# --- scheduling ---


def test_claim_due_probes_claims_each_deployment_once_per_interval(serving):
    add_replicas(serving, "http://127.0.0.1:9")
    now = timezone.now()

    first = claim_due_probes(now=now)
    again = claim_due_probes(now=now + timedelta(seconds=10))
    later = claim_due_probes(now=now + serving.deployment.probe_interval)

    assert (first, again, later) == ([serving.deployment.pk], [], [serving.deployment.pk])


def test_claim_due_probes_skips_deployments_without_probe_interval_or_replica_urls(
    serving, deployment_factory
):
    add_replicas(serving, "http://127.0.0.1:9")
    serving.deployment.probe_interval = None
    serving.deployment.save()
    deployment_factory()  # no replicas at all

    assert claim_due_probes() == []


def test_dispatch_due_probes_enqueues_claimed_deployments(serving):
    add_replicas(serving, "http://127.0.0.1:9")
    enqueued = []

    dispatch_due_probes(enqueue=enqueued.append)

    assert enqueued == [serving.deployment.pk]


def test_prune_consistency_checks_deletes_old_checks_only(serving, system_actor):
    with time_machine.travel(timezone.now() - timedelta(days=30)):
        run(serving, system_actor)
    recent = run(serving, system_actor)

    deleted = prune_consistency_checks(older_than=timedelta(days=14))

    assert deleted == 1
    assert list(ConsistencyCheck.objects.all()) == [recent]


# --- golden sets ---


def test_save_golden_set_is_audited_and_normalises_inputs(registered_model, system_actor):
    gs = save_golden_set(
        actor=system_actor, registered_model=registered_model, name="g", inputs=[{"input": 1}]
    )

    assert gs.inputs == [{"name": "0", "input": 1, "expected": None}]
    assert AuditEvent.objects.filter(kind="golden_set.created", target_id=str(gs.pk)).exists()


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"inputs": []}, "inputs"),
        ({"inputs": [{"x": 1}]}, "inputs"),
        ({"inputs": [{"name": "a", "input": 1}, {"name": "a", "input": 2}]}, "inputs"),
        ({"rule": "top_k"}, "top_k"),
        ({"rule": "fuzzy"}, "rule"),
        ({"abs_tolerance": -1.0}, "abs_tolerance"),
    ],
)
def test_save_golden_set_rejects_unusable_sets(registered_model, system_actor, changes, field):
    kwargs = {"name": "g", "inputs": [{"input": 1}], **changes}

    with pytest.raises(InvalidInput) as error:
        save_golden_set(actor=system_actor, registered_model=registered_model, **kwargs)

    assert error.value.field == field
    assert not GoldenSet.objects.exists()


def test_save_golden_set_refuses_a_second_set_with_the_same_name(registered_model, system_actor):
    save_golden_set(actor=system_actor, registered_model=registered_model, name="g", inputs=GOLDEN)

    with pytest.raises(DuplicateVersion):
        save_golden_set(
            actor=system_actor, registered_model=registered_model, name="g", inputs=GOLDEN
        )

    assert GoldenSet.objects.count() == 1


def test_delete_golden_set_keeps_past_results(serving, model_servers, system_actor):
    add_replicas(serving, *(s.url for s in model_servers("A")))
    run(serving, system_actor)

    delete_golden_set(actor=system_actor, golden_set=GoldenSet.objects.get())

    assert ReplicaProbeResult.objects.count() == 1
    assert AuditEvent.objects.filter(kind="golden_set.deleted").exists()
