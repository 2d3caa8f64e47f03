"""Every list endpoint costs the same number of SQL queries whatever the number of rows."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from registry.roles import Actor
from registry.services import AllocationSpec, move_alias, record_audit_event, set_allocation

LIST_URLS = [
    "/api/v1/applications/",
    "/api/v1/models/",
    "/api/v1/versions/",
    "/api/v1/deployments/",
    "/api/v1/replicas/",
    "/api/v1/audit-events/",
]
BUDGET = 4  # token lookup, count, page (+ one prefetch); none of them per row


@pytest.fixture
def reader(token_client, viewer_user):
    client = token_client(viewer_user, "read")
    client.get("/api/v1/applications/")  # records the token's last use once
    return client


@pytest.fixture
def grow_fleet(application_factory, model_version_factory, deployment_factory, replica_factory):
    """grow_fleet(n): add n applications, each with a deployment, 2 versions, aliases, replicas."""
    actor = Actor.system("tests")

    def grow(n):
        for _ in range(n):
            app = application_factory()
            v1 = model_version_factory()
            v2 = model_version_factory(registered_model=v1.registered_model)
            move_alias(
                actor=actor, registered_model=v1.registered_model, name="champion", version=v1
            )
            move_alias(
                actor=actor, registered_model=v1.registered_model, name="staging", version=v2
            )
            deployment = deployment_factory(application=app)
            set_allocation(
                actor=actor,
                deployment=deployment,
                allocations=[AllocationSpec(v1, 90), AllocationSpec(v2, 10, "canary")],
            )
            replica_factory.create_batch(2, deployment=deployment, reported_version=v1)
            record_audit_event(actor=actor, kind="test.event", target=app, application=app)

    return grow


def count_queries(client, url):
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
    assert response.status_code == 200
    return len(ctx.captured_queries), response.json()["count"]


@pytest.mark.parametrize("url", LIST_URLS)
def test_list_endpoint_query_count_is_flat(reader, grow_fleet, url):
    grow_fleet(2)
    small, small_rows = count_queries(reader, url)
    grow_fleet(12)

    large, large_rows = count_queries(reader, url)

    assert large_rows > small_rows
    assert large == small <= BUDGET


@pytest.mark.parametrize("suffix", ["versions/", "aliases/"])
def test_model_sub_list_query_count_is_flat(
    reader, model_version_factory, registered_model, suffix
):
    actor = Actor.system("tests")
    url = f"/api/v1/models/{registered_model.name}/{suffix}"

    def grow(n):
        for i in range(n):
            mv = model_version_factory(registered_model=registered_model)
            move_alias(
                actor=actor,
                registered_model=registered_model,
                name=f"a{mv.version}-{i}",
                version=mv,
            )

    grow(2)
    small, _ = count_queries(reader, url)
    grow(10)
    large, _ = count_queries(reader, url)

    assert large == small <= BUDGET
