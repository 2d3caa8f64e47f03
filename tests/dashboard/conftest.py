"""Fleet builders for the status and page tests."""

from datetime import timedelta

import pytest
from django.utils import timezone

from tests.factories import registry as rf


@pytest.fixture
def make_fleet():
    """make_fleet(apps, deployments, versions, replicas) -> list of applications.

    Every deployment splits its traffic across `versions` fresh versions and has `replicas`
    healthy replicas serving the first one; each dimension drives row counts in its own table.
    """

    def make(apps=1, deployments=1, versions=1, replicas=1):
        created = []
        for _ in range(apps):
            app = rf.ApplicationFactory()
            for _ in range(deployments):
                dep = rf.DeploymentFactory(application=app, desired_replicas=replicas)
                mvs = rf.ModelVersionFactory.create_batch(versions)
                weights = [100 // versions] * versions
                weights[0] += 100 - sum(weights)
                for mv, weight in zip(mvs, weights, strict=True):
                    rf.TrafficAllocationFactory(deployment=dep, model_version=mv, weight=weight)
                rf.ReplicaFactory.create_batch(
                    replicas, deployment=dep, reported_version=mvs[0], reported_sha256=mvs[0].sha256
                )
                rf.RolloutFactory(
                    deployment=dep,
                    baseline_version=mvs[0],
                    state="running",
                    started_at=timezone.now(),
                )
            created.append(app)
        return created

    return make


@pytest.fixture
def serving(
    application_factory, deployment_factory, model_version_factory, traffic_allocation_factory
):
    """One application, one deployment of 4 desired replicas, a 90/10 canary split."""
    app = application_factory(
        slug="home-feed", name="Home feed", team="growth", max_model_age=timedelta(hours=24)
    )
    dep = deployment_factory(application=app, name="prod", desired_replicas=4)
    now = timezone.now()
    control = model_version_factory(trained_at=now - timedelta(hours=30), metrics={"accuracy": 0.9})
    canary = model_version_factory(
        registered_model=control.registered_model, trained_at=now - timedelta(hours=2), metrics={}
    )
    traffic_allocation_factory(deployment=dep, model_version=control, weight=90, role="control")
    traffic_allocation_factory(deployment=dep, model_version=canary, weight=10, role="canary")
    return app, dep, control, canary
