from datetime import timedelta

import pytest
from django.utils import timezone

from dashboard import selectors
from registry.exceptions import NotFound
from registry.selectors import replica_consistency_counts


def test_replica_counts_use_each_deployments_own_heartbeat_timeout(
    deployment_factory, replica_factory
):
    patient = deployment_factory(heartbeat_timeout=timedelta(minutes=30), desired_replicas=2)
    strict = deployment_factory(heartbeat_timeout=timedelta(seconds=30), desired_replicas=2)
    five_minutes_ago = timezone.now() - timedelta(minutes=5)
    replica_factory(deployment=patient, last_heartbeat_at=five_minutes_ago)
    replica_factory(deployment=strict, last_heartbeat_at=five_minutes_ago)

    counts = replica_consistency_counts([patient.pk, strict.pk])

    assert (counts[patient.pk].reporting, counts[patient.pk].stale) == (1, 0)
    assert (counts[strict.pk].reporting, counts[strict.pk].stale) == (0, 1)


def test_replica_counts_treat_a_replica_that_never_reported_as_stale(
    deployment_factory, replica_factory
):
    dep = deployment_factory(desired_replicas=3)
    replica_factory(deployment=dep, last_heartbeat_at=None)

    counts = replica_consistency_counts([dep.pk])[dep.pk]

    assert (counts.expected, counts.reporting, counts.stale, counts.mismatched) == (3, 0, 1, 0)


def test_replica_counts_match_against_current_allocations_only(
    serving, replica_factory, devops_actor
):
    from registry.services import AllocationSpec, set_allocation

    app, dep, control, canary = serving
    replica_factory(deployment=dep, reported_sha256=control.sha256)
    set_allocation(
        actor=devops_actor,
        deployment=dep,
        allocations=[AllocationSpec(model_version=canary, weight=100)],
    )

    counts = replica_consistency_counts([dep.pk])[dep.pk]

    assert (counts.reporting, counts.mismatched, counts.consistent) == (1, 1, 0)


def test_replica_counts_of_a_deployment_without_replicas_are_zero(deployment_factory):
    dep = deployment_factory(desired_replicas=2)

    counts = replica_consistency_counts([dep.pk])[dep.pk]

    assert (counts.expected, counts.reporting, counts.stale, counts.mismatched) == (2, 0, 0, 0)


def test_replica_counts_of_no_deployments_cost_no_query(django_assert_num_queries):
    with django_assert_num_queries(0):
        assert replica_consistency_counts([]) == {}


def test_application_status_of_unknown_slug_raises_not_found():
    with pytest.raises(NotFound):
        selectors.application_status("nope")


@pytest.mark.parametrize(("hours", "level"), [(6, "ok"), (20, "warn"), (25, "breach")])
def test_application_age_level_is_green_amber_red_against_the_slo(
    hours,
    level,
    application_factory,
    deployment_factory,
    model_version_factory,
    traffic_allocation_factory,
):
    app = application_factory(max_model_age=timedelta(hours=24))
    dep = deployment_factory(application=app)
    mv = model_version_factory(trained_at=timezone.now() - timedelta(hours=hours))
    traffic_allocation_factory(deployment=dep, model_version=mv)

    status = selectors.application_status(app.slug)

    assert status.age_level == level
    assert status.versions[0].slo_breached is (level == "breach")


def test_application_replica_level_is_red_when_a_replica_serves_an_unallocated_artifact(
    serving, replica_factory
):
    app, dep, control, canary = serving
    replica_factory.create_batch(3, deployment=dep, reported_sha256=control.sha256)
    replica_factory(deployment=dep, reported_sha256="0" * 64)

    status = selectors.application_status(app.slug)

    assert (status.replicas_consistent, status.replicas_expected) == (3, 4)
    assert status.replica_level == "breach"


def test_fleet_summary_counts_breaches_and_rollouts(make_fleet, serving):
    make_fleet(apps=2)

    summary = selectors.fleet_summary(selectors.fleet_status())

    assert (summary.applications, summary.slo_breached, summary.rollouts) == (3, 1, 2)


def test_application_replica_level_is_red_when_no_replica_reports(serving, replica_factory):
    app, dep, control, canary = serving
    replica_factory.create_batch(
        4,
        deployment=dep,
        reported_sha256=control.sha256,
        last_heartbeat_at=timezone.now() - timedelta(hours=1),
    )

    status = selectors.application_status(app.slug)

    assert (status.replicas_consistent, status.replicas_stale) == (0, 4)
    assert status.replica_level == "breach"


def test_application_replica_level_is_amber_when_a_replica_is_missing(serving, replica_factory):
    app, dep, control, canary = serving
    replica_factory.create_batch(3, deployment=dep, reported_sha256=control.sha256)

    assert selectors.application_status(app.slug).replica_level == "warn"


def test_online_accuracy_sums_labelled_buckets_of_every_kind_and_skips_unlabelled(serving):
    from feedback.models import QualityRollup

    app, dep, control, canary = serving
    hour = timezone.now().replace(minute=0, second=0, microsecond=0)
    for kind, correct, labelled in (
        ("label", 70, 100),
        ("conversion", 30, 100),
        ("impression", 0, 0),
    ):
        QualityRollup.objects.create(
            application=app, model_version=control, kind=kind, hour=hour, count=500,
            correct=correct, labelled=labelled,
        )  # fmt: skip
    QualityRollup.objects.create(
        application=app, model_version=canary, kind="impression", hour=hour, count=500
    )

    online = selectors.online_accuracy({(app.pk, control.pk), (app.pk, canary.pk)})

    assert online == {(app.pk, control.pk): 0.5}  # 100 of 200; the canary has no labels


def test_model_online_points_are_hourly_accuracy_per_version_over_every_application(
    serving, application_factory
):
    from dashboard.page_selectors import online_accuracy_points
    from feedback.models import QualityRollup

    app, dep, control, canary = serving
    other = application_factory()
    hour = timezone.now().replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    for application, correct in ((app, 60), (other, 90)):
        QualityRollup.objects.create(
            application=application, model_version=control, kind="label", hour=hour,
            count=100, correct=correct, labelled=100,
        )  # fmt: skip
    QualityRollup.objects.create(
        application=app, model_version=canary, kind="impression", hour=hour, count=100
    )

    points = online_accuracy_points(
        {control.pk: "m v1", canary.pk: "m v2"}, since=hour - timedelta(hours=1)
    )

    assert [(p.hour, p.version, p.accuracy) for p in points] == [(hour, "m v1", 0.75)]
