from registry.services import AllocationSpec, set_allocation


def test_set_allocation_closes_previous_rows(deployment, model_version_factory, system_actor):
    v1, v2 = model_version_factory.create_batch(2)
    set_allocation(actor=system_actor, deployment=deployment, allocations=[AllocationSpec(v1, 100)])

    set_allocation(
        actor=system_actor,
        deployment=deployment,
        allocations=[AllocationSpec(v1, 90), AllocationSpec(v2, 10, "canary")],
    )

    current = deployment.allocations.filter(valid_to__isnull=True)
    assert sorted(a.weight for a in current) == [10, 90]
    assert deployment.allocations.filter(valid_to__isnull=False).count() == 1
