"""Registry services: every write transactional, audited, and refusing bad input whole."""

import hashlib
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from registry import selectors
from registry.exceptions import DuplicateVersion, InvalidInput, PermissionDenied
from registry.models import (
    AliasAssignment,
    ApiToken,
    Application,
    AuditEvent,
    ModelVersion,
    Replica,
    TrafficAllocation,
)
from registry.roles import Actor
from registry.services import (
    AllocationSpec,
    authenticate_token,
    create_api_token,
    move_alias,
    record_heartbeat,
    register_version,
    revoke_api_token,
    set_allocation,
    update_application,
)

SHA = "cd" * 32


def register(actor, model, **kwargs):
    args = {
        "artifact_uri": "s3://m/model.onnx",
        "sha256": SHA,
        "size_bytes": 10,
        "trained_at": timezone.now(),
    }
    return register_version(actor=actor, registered_model=model, **(args | kwargs))


# --- register_version ---


def test_register_version_numbers_versions_consecutively(devops_actor, registered_model):
    first = register(devops_actor, registered_model)
    second = register(devops_actor, registered_model)

    assert (first.version, second.version) == (1, 2)
    assert second.registered_by == devops_actor.user


def test_register_version_audits_who_and_what(devops_actor, registered_model):
    mv = register(devops_actor, registered_model, reason="nightly")

    event = AuditEvent.objects.get(kind="version.registered")
    assert event.actor == devops_actor.user
    assert event.target_id == str(mv.pk)
    assert event.after["version"] == 1
    assert event.reason == "nightly"


def test_register_version_refuses_duplicate_number(devops_actor, registered_model):
    register(devops_actor, registered_model, version=5)

    with pytest.raises(DuplicateVersion):
        register(devops_actor, registered_model, version=5)

    assert ModelVersion.objects.count() == 1
    assert AuditEvent.objects.filter(kind="version.registered").count() == 1


def test_register_version_stores_sha256_lowercase(devops_actor, registered_model):
    mv = register(devops_actor, registered_model, sha256=SHA.upper())

    assert mv.sha256 == SHA


# --- move_alias ---


@pytest.fixture
def two_versions(model_version_factory, registered_model):
    return model_version_factory.create_batch(2, registered_model=registered_model)


def test_move_alias_keeps_history_answerable_by_instant(
    devops_actor, registered_model, two_versions
):
    v1, v2 = two_versions
    move_alias(actor=devops_actor, registered_model=registered_model, name="champion", version=v1)
    between = timezone.now()
    time.sleep(0.01)

    move_alias(actor=devops_actor, registered_model=registered_model, name="champion", version=v2)

    at = selectors.alias_version_at
    assert at(registered_model=registered_model, name="champion", at=between) == v1
    assert at(registered_model=registered_model, name="champion") == v2
    assert (
        at(registered_model=registered_model, name="champion", at=between - timedelta(days=1))
        is None
    )
    assert AliasAssignment.objects.filter(replaced_at__isnull=True).count() == 1


def test_move_alias_to_same_version_writes_nothing(devops_actor, registered_model, two_versions):
    v1, _ = two_versions
    move_alias(actor=devops_actor, registered_model=registered_model, name="staging", version=v1)

    move_alias(actor=devops_actor, registered_model=registered_model, name="staging", version=v1)

    assert AliasAssignment.objects.count() == 1
    assert AuditEvent.objects.filter(kind="alias.moved").count() == 1


def test_move_protected_alias_refused_for_product(
    devops_actor, product_user, registered_model, two_versions
):
    v1, v2 = two_versions
    move_alias(actor=devops_actor, registered_model=registered_model, name="champion", version=v1)

    with pytest.raises(PermissionDenied):
        move_alias(
            actor=Actor.of(product_user),
            registered_model=registered_model,
            name="champion",
            version=v2,
        )

    assert selectors.alias_version_at(registered_model=registered_model, name="champion") == v1


def test_move_alias_marked_protected_then_refused_for_product(
    devops_actor, product_user, registered_model, two_versions
):
    v1, v2 = two_versions
    move_alias(
        actor=devops_actor,
        registered_model=registered_model,
        name="gold",
        version=v1,
        protected=True,
    )

    with pytest.raises(PermissionDenied):
        move_alias(
            actor=Actor.of(product_user), registered_model=registered_model, name="gold", version=v2
        )


def test_move_unprotected_alias_allowed_for_product(product_user, registered_model, two_versions):
    v1, _ = two_versions

    alias = move_alias(
        actor=Actor.of(product_user),
        registered_model=registered_model,
        name="challenger",
        version=v1,
    )

    assert alias.version == v1
    assert not alias.protected


def test_move_alias_refuses_version_of_another_model(
    devops_actor, registered_model, model_version_factory
):
    model_version = model_version_factory()  # of a model of its own

    with pytest.raises(InvalidInput):
        move_alias(
            actor=devops_actor,
            registered_model=registered_model,
            name="champion",
            version=model_version,
        )


# --- set_allocation ---


def test_set_allocation_refuses_weights_not_summing_to_100(system_actor, deployment, two_versions):
    v1, v2 = two_versions
    set_allocation(actor=system_actor, deployment=deployment, allocations=[AllocationSpec(v1, 100)])

    with pytest.raises(InvalidInput) as err:
        set_allocation(
            actor=system_actor,
            deployment=deployment,
            allocations=[AllocationSpec(v1, 60), AllocationSpec(v2, 30)],
        )

    assert err.value.field == "allocations"
    assert TrafficAllocation.objects.filter(valid_to__isnull=True).count() == 1
    assert AuditEvent.objects.filter(kind="allocation.changed").count() == 1


def test_set_allocation_history_answers_past_split(system_actor, deployment, two_versions):
    v1, v2 = two_versions
    set_allocation(actor=system_actor, deployment=deployment, allocations=[AllocationSpec(v1, 100)])
    between = timezone.now()
    time.sleep(0.01)
    set_allocation(
        actor=system_actor,
        deployment=deployment,
        allocations=[AllocationSpec(v1, 50), AllocationSpec(v2, 50, "treatment")],
    )

    past = selectors.allocations_at(deployment_ids=[deployment.pk], at=between)

    assert [(a.model_version, a.weight) for a in past] == [(v1, 100)]


def test_set_allocation_audits_before_and_after(system_actor, deployment, two_versions):
    v1, v2 = two_versions
    set_allocation(actor=system_actor, deployment=deployment, allocations=[AllocationSpec(v1, 100)])

    set_allocation(
        actor=system_actor,
        deployment=deployment,
        allocations=[AllocationSpec(v1, 90), AllocationSpec(v2, 10, "canary")],
        reason="canary",
    )

    event = AuditEvent.objects.filter(kind="allocation.changed").first()
    assert event.reason == "canary"
    assert [a["weight"] for a in event.before] == [100]
    assert sorted(a["weight"] for a in event.after) == [10, 90]
    assert event.application == deployment.application


# --- record_heartbeat ---


def test_record_heartbeat_upserts_one_row_per_instance(deployment, two_versions):
    v1, v2 = two_versions
    record_heartbeat(deployment=deployment, instance_id="pod-1", model_version=v1)
    first = Replica.objects.get().last_heartbeat_at

    record_heartbeat(deployment=deployment, instance_id="pod-1", model_version=v2)

    replica = Replica.objects.get()
    assert replica.reported_version == v2
    assert replica.reported_sha256 == v2.sha256
    assert replica.last_heartbeat_at >= first


def test_record_heartbeat_keeps_instances_apart(deployment):
    record_heartbeat(deployment=deployment, instance_id="pod-1")
    record_heartbeat(deployment=deployment, instance_id="pod-2")

    assert Replica.objects.filter(deployment=deployment).count() == 2


# --- tokens ---


def test_token_is_stored_hashed(viewer_user, system_actor):
    token, raw = create_api_token(actor=system_actor, user=viewer_user, name="ci", scopes=["read"])

    assert raw not in {token.key_hash, token.prefix}
    assert token.key_hash == hashlib.sha256(raw.encode()).hexdigest()
    assert not ApiToken.objects.filter(key_hash=raw).exists()


def test_token_authenticates_and_records_last_use(viewer_user, system_actor):
    token, raw = create_api_token(actor=system_actor, user=viewer_user, name="ci", scopes=["read"])

    assert authenticate_token(raw) == token
    token.refresh_from_db()
    assert token.last_used_at is not None


def test_token_expires(viewer_user, system_actor):
    _, raw = create_api_token(
        actor=system_actor, user=viewer_user, name="ci", scopes=["read"], ttl=timedelta(seconds=-1)
    )

    assert authenticate_token(raw) is None


def test_token_revocation_is_immediate_and_audited(viewer_user, system_actor):
    token, raw = create_api_token(actor=system_actor, user=viewer_user, name="ci", scopes=["read"])

    revoke_api_token(actor=system_actor, token=token, reason="leaked")

    assert authenticate_token(raw) is None
    assert AuditEvent.objects.get(kind="token.revoked").reason == "leaked"


def test_token_refuses_unknown_scope(viewer_user, system_actor):
    with pytest.raises(InvalidInput):
        create_api_token(actor=system_actor, user=viewer_user, name="ci", scopes=["admin"])

    assert not ApiToken.objects.exists()


def test_token_of_inactive_user_does_not_authenticate(viewer_user, system_actor):
    _, raw = create_api_token(actor=system_actor, user=viewer_user, name="ci", scopes=["read"])
    viewer_user.is_active = False
    viewer_user.save()

    assert authenticate_token(raw) is None


# --- update_application ---


def test_update_application_audits_only_what_changed(devops_actor, application):
    update_application(
        actor=devops_actor, application=application, team="search", name=application.name
    )

    event = AuditEvent.objects.get(kind="application.updated")
    assert event.before == {"team": "growth"}
    assert event.after == {"team": "search"}
    assert Application.objects.get(pk=application.pk).team == "search"


def test_update_application_without_change_is_silent(devops_actor, application):
    update_application(actor=devops_actor, application=application, team=application.team)

    assert not AuditEvent.objects.filter(kind="application.updated").exists()


def test_update_application_refuses_slug(devops_actor, application):
    with pytest.raises(InvalidInput):
        update_application(actor=devops_actor, application=application, slug="other")
