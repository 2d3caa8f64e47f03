from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from dashboard.celery import app as celery_app
from registry.models import ConsistencyCheck
from registry.replica_selectors import (
    allocated_versions,
    consistency_check_list,
    deployment_by_ref,
    live_replicas,
    replica_rows,
)
from registry.selectors import replica_consistency_counts
from registry.services import record_heartbeat
from registry.services.probes import ProbeOptions, probe_deployment, save_golden_set
from registry.tasks import probe_deployment_task, probe_due_deployments_task
from tests.registry.model_servers import model_servers_fixture  # noqa: F401

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def beat(allocation, instance_id="pod-a", sha256=None, **kwargs):
    return record_heartbeat(
        deployment=allocation.deployment,
        instance_id=instance_id,
        sha256=sha256 or allocation.model_version.sha256,
        **kwargs,
    )


def row(allocation, instance_id="pod-a"):
    return replica_rows(deployment_id=allocation.deployment.pk).get(instance_id=instance_id)


# --- staleness and mismatch ---


def test_replica_turns_stale_once_silent_longer_than_heartbeat_timeout(traffic_allocation):
    timeout = traffic_allocation.deployment.heartbeat_timeout
    with time_machine.travel(T0, tick=False):
        beat(traffic_allocation)

    with time_machine.travel(T0 + timeout, tick=False):
        assert row(traffic_allocation).is_stale is False
    with time_machine.travel(T0 + timeout + timedelta(seconds=1), tick=False):
        assert row(traffic_allocation).is_stale is True


def test_staleness_uses_each_deployments_own_timeout(traffic_allocation_factory):
    quick = traffic_allocation_factory(deployment__heartbeat_timeout=timedelta(seconds=30))
    patient = traffic_allocation_factory(deployment__heartbeat_timeout=timedelta(minutes=10))
    with time_machine.travel(T0, tick=False):
        beat(quick)
        beat(patient)

    with time_machine.travel(T0 + timedelta(minutes=5), tick=False):
        assert (row(quick).is_stale, row(patient).is_stale) == (True, False)


def test_replica_that_never_beat_is_stale(traffic_allocation, replica_factory):
    replica_factory(deployment=traffic_allocation.deployment, last_heartbeat_at=None)

    assert [r.is_stale for r in replica_rows(deployment_id=traffic_allocation.deployment.pk)] == [
        True
    ]


def test_live_replicas_excludes_stale_ones(traffic_allocation):
    with time_machine.travel(T0, tick=False):
        beat(traffic_allocation, "old")
    with time_machine.travel(T0 + timedelta(hours=1), tick=False):
        beat(traffic_allocation, "new")

        live = live_replicas(deployment_id=traffic_allocation.deployment.pk)

    assert [r.instance_id for r in live] == ["new"]


def test_replica_with_unallocated_artifact_is_mismatched(traffic_allocation, model_version_factory):
    model_version = model_version_factory()
    beat(traffic_allocation, "good")
    beat(traffic_allocation, "bad", sha256=model_version.sha256)

    assert (
        row(traffic_allocation, "good").is_mismatched,
        row(traffic_allocation, "bad").is_mismatched,
    ) == (
        False,
        True,
    )


def test_replica_turns_mismatched_when_allocation_moves_on(
    traffic_allocation, model_version_factory, system_actor
):
    model_version = model_version_factory()
    from registry.services import AllocationSpec, set_allocation

    beat(traffic_allocation)

    set_allocation(
        actor=system_actor,
        deployment=traffic_allocation.deployment,
        allocations=[AllocationSpec(model_version, 100)],
    )

    assert row(traffic_allocation).is_mismatched is True


def test_replica_serving_a_canary_version_is_not_mismatched(
    traffic_allocation, traffic_allocation_factory, model_version_factory
):
    model_version = model_version_factory()
    traffic_allocation_factory(
        deployment=traffic_allocation.deployment, model_version=model_version, weight=0
    )

    beat(traffic_allocation, sha256=model_version.sha256)

    assert row(traffic_allocation).is_mismatched is False


def test_deployment_by_ref_accepts_id_and_slug_path(deployment):
    assert deployment_by_ref(deployment.pk) == deployment
    assert deployment_by_ref(str(deployment.pk)) == deployment
    assert deployment_by_ref(f"{deployment.application.slug}/{deployment.name}") == deployment
    assert deployment_by_ref("nope") is None
    assert deployment_by_ref("/") is None
    assert deployment_by_ref("\u00b2") is None  # a digit to str.isdigit(), not to int()
    assert deployment_by_ref("9" * 30) is None  # beyond a bigint


def test_deployment_by_ref_of_another_application_is_none(deployment, deployment_factory):
    other = deployment_factory()

    assert deployment_by_ref(f"{other.application.slug}/{deployment.name}") != deployment


def test_allocated_versions_are_the_current_ones_highest_first(
    deployment, model_version_factory, traffic_allocation_factory, django_assert_num_queries
):
    old, low, high = (model_version_factory(version=n) for n in (1, 2, 9))
    now = datetime.now(UTC)
    traffic_allocation_factory(deployment=deployment, model_version=old, valid_to=now)
    traffic_allocation_factory(deployment=deployment, model_version=low, role="shadow")
    traffic_allocation_factory(deployment=deployment, model_version=high, role="canary")
    traffic_allocation_factory(model_version=old)  # another deployment's

    with django_assert_num_queries(1):
        versions = allocated_versions(deployment)
        names = [(v.registered_model.name, v.version, v.sha256) for v in versions]

    assert names == [
        (high.registered_model.name, 9, high.sha256),
        (low.registered_model.name, 2, low.sha256),
    ]


# --- query budgets ---


@pytest.mark.parametrize("size", [2, 20])
def test_replica_rows_query_count_is_flat(traffic_allocation, django_assert_max_num_queries, size):
    for i in range(size):
        beat(traffic_allocation, f"pod-{i}", model_version=traffic_allocation.model_version)

    with django_assert_max_num_queries(1):
        rows = list(replica_rows(deployment_id=traffic_allocation.deployment.pk))
        [(r.is_stale, r.is_mismatched, r.reported_version.registered_model.name) for r in rows]

    assert len(rows) == size


@pytest.mark.parametrize("size", [1, 8])
def test_consistency_check_list_query_count_is_flat(
    traffic_allocation, system_actor, django_assert_max_num_queries, size
):
    for i in range(3):
        beat(traffic_allocation, f"pod-{i}", url="http://127.0.0.1:9")
    save_golden_set(
        actor=system_actor,
        registered_model=traffic_allocation.model_version.registered_model,
        name="g",
        inputs=[{"input": 1}],
    )
    for _ in range(size):
        probe_deployment(
            deployment=traffic_allocation.deployment,
            actor=system_actor,
            options=ProbeOptions(timeout=0.2),
        )

    with django_assert_max_num_queries(2):
        checks = list(consistency_check_list())
        [
            (
                str(c.deployment),
                [(r.replica.instance_id, r.reported_version) for r in c.result_list],
            )
            for c in checks
        ]

    assert len(checks) == size


# --- tasks ---


def test_probe_deployment_task_stores_a_check(traffic_allocation, model_servers, system_actor):
    save_golden_set(
        actor=system_actor,
        registered_model=traffic_allocation.model_version.registered_model,
        name="g",
        inputs=[{"input": {"x": 1}}],
    )
    (server,) = model_servers("A")
    beat(traffic_allocation, url=server.url)

    result = probe_deployment_task.apply(args=[traffic_allocation.deployment.pk])

    assert result.get() == "consistent"
    assert ConsistencyCheck.objects.get().triggered_by == "probe"


def test_probe_deployment_task_of_deleted_deployment_does_nothing():
    assert probe_deployment_task.apply(args=[987654]).get() == "gone"


def test_probe_due_deployments_task_probes_due_deployments(
    traffic_allocation, model_servers, system_actor, monkeypatch
):
    monkeypatch.setitem(celery_app.conf, "task_always_eager", True)
    save_golden_set(
        actor=system_actor,
        registered_model=traffic_allocation.model_version.registered_model,
        name="g",
        inputs=[{"input": {"x": 1}}],
    )
    (server,) = model_servers("A")
    beat(traffic_allocation, url=server.url)

    assert probe_due_deployments_task.apply().get() == 1
    assert probe_due_deployments_task.apply().get() == 0  # not due again yet

    assert ConsistencyCheck.objects.get().outcome == "consistent"


def test_probe_tasks_are_routed_to_the_probes_queue():
    route = celery_app.amqp.router.route({}, probe_deployment_task.name)

    assert route["queue"].name == "probes"


# --- consistency counts of the status endpoint ---


def test_replica_consistency_counts_include_probe_verdicts(
    traffic_allocation, model_servers, system_actor
):
    save_golden_set(
        actor=system_actor,
        registered_model=traffic_allocation.model_version.registered_model,
        name="g",
        inputs=[{"input": {"x": 1}}],
    )
    for i, server in enumerate(model_servers("A", "A", "B")):
        beat(traffic_allocation, f"pod-{i}", url=server.url)
    check = probe_deployment(
        deployment=traffic_allocation.deployment,
        actor=system_actor,
        options=ProbeOptions(timeout=0.3),
    )

    counts = replica_consistency_counts([traffic_allocation.deployment.pk])[
        traffic_allocation.deployment.pk
    ]

    assert (counts.reporting, counts.mismatched, counts.inconsistent) == (3, 0, 1)
    assert (counts.last_check_at, counts.last_check_outcome) == (check.started_at, "inconsistent")


def test_replica_consistency_counts_without_checks(traffic_allocation):
    beat(traffic_allocation)

    counts = replica_consistency_counts([traffic_allocation.deployment.pk])[
        traffic_allocation.deployment.pk
    ]

    assert (counts.inconsistent, counts.last_check_at, counts.last_check_outcome) == (0, None, "")


@pytest.mark.parametrize("size", [1, 10])
def test_replica_consistency_counts_query_count_is_flat(
    traffic_allocation_factory, system_actor, django_assert_max_num_queries, size
):
    allocations = traffic_allocation_factory.create_batch(size)
    for allocation in allocations:
        beat(allocation)
        probe_deployment(deployment=allocation.deployment, actor=system_actor)

    with django_assert_max_num_queries(1):
        counts = replica_consistency_counts([a.deployment.pk for a in allocations])

    assert len(counts) == size
    assert all(c.last_check_outcome == "skipped" for c in counts.values())
