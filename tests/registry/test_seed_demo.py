from datetime import timedelta

import pytest
from django.apps import apps
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import check_password
from django.core.management import call_command
from django.db import transaction
from django.db.models import F, Max, Min
from django.utils import timezone

from registry.demo import DEMO_PASSWORD_HASHES, DEMO_USERS, seed_demo
from registry.models import (
    AliasAssignment,
    Application,
    AuditEvent,
    Deployment,
    ModelAlias,
    ModelVersion,
    RegisteredModel,
    Replica,
    Rollout,
    TrafficAllocation,
)


@pytest.fixture(scope="module")
def seeded(django_db_setup, django_db_blocker):
    """The demo fleet, seeded once for the module inside a transaction rolled back at the end."""
    with django_db_blocker.unblock():
        atomic = transaction.atomic()
        atomic.__enter__()
        try:
            yield seed_demo()
        finally:
            transaction.set_rollback(True)
            atomic.__exit__(None, None, None)


def _snapshot() -> dict:
    counts = {m._meta.label: m._default_manager.count() for m in apps.get_models()}
    heartbeats = sorted(Replica.objects.values_list("instance_id", "last_heartbeat_at"))
    aliases = sorted(ModelAlias.objects.values_list("name", "registered_model__name", "version"))
    return {"counts": counts, "heartbeats": heartbeats, "aliases": aliases}


def _current(deployment):
    return {
        (a.model_version.version, a.weight, a.role)
        for a in deployment.allocations.filter(valid_to__isnull=True).select_related(
            "model_version"
        )
    }


GOLDEN_METRICS = {"accuracy": 0.7355, "auc": 0.8452, "ndcg_at_10": 0.4477}
GOLDEN_SIZE = 453712679
PBKDF2 = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]


def test_seed_demo_second_run_changes_nothing(seeded, settings, capsys):
    settings.DEBUG = True  # pytest-django runs with DEBUG off; the command needs it on
    before = _snapshot()

    call_command("seed_demo")

    assert _snapshot() == before
    assert "nothing to do" in capsys.readouterr().out


def test_seed_demo_builds_the_fleet_through_audited_services(seeded):
    assert Application.objects.count() >= 5
    assert RegisteredModel.objects.count() >= 12
    registered = AuditEvent.objects.filter(kind="version.registered").count()
    assert registered == ModelVersion.objects.count() > 12 * 5
    assert AuditEvent.objects.filter(target_type="Rollout").count() >= 2


def test_seed_demo_spreads_version_histories_over_60_days(seeded):
    span = ModelVersion.objects.aggregate(first=Min("trained_at"), last=Max("trained_at"))

    assert span["last"] - span["first"] >= timedelta(days=55)
    assert ModelVersion.objects.values("format").distinct().count() >= 5
    assert ModelVersion.objects.filter(metrics__has_key="accuracy").count() == (
        ModelVersion.objects.count()
    )


def test_seed_demo_deployments_have_3_to_8_reporting_replicas(seeded):
    for deployment in Deployment.objects.all():
        replicas = deployment.replicas.count()
        assert 3 <= replicas <= 8, deployment
        assert replicas == deployment.desired_replicas


def test_seed_demo_has_one_replica_serving_a_stale_version(seeded):
    stale = [
        r
        for r in Replica.objects.select_related("deployment")
        if r.reported_sha256
        not in {
            a.model_version.sha256
            for a in r.deployment.allocations.filter(valid_to__isnull=True).select_related(
                "model_version"
            )
        }
    ]

    assert len(stale) == 1
    assert (
        stale[0].reported_version.trained_at
        < stale[0]
        .deployment.allocations.get(valid_to__isnull=True, role="control")
        .model_version.trained_at
    )


def test_seed_demo_runs_an_ab_test_at_50_50(seeded):
    rollout = Rollout.objects.get(strategy=Rollout.Strategy.AB_TEST)

    assert rollout.state == Rollout.State.RUNNING
    assert _current(rollout.deployment) == {
        (rollout.baseline_version.version, 50, "control"),
        (rollout.candidate_version.version, 50, "treatment"),
    }


def test_seed_demo_runs_a_canary_at_5_percent(seeded):
    rollout = Rollout.objects.get(strategy=Rollout.Strategy.CANARY)

    assert rollout.state == Rollout.State.RUNNING
    assert _current(rollout.deployment) == {
        (rollout.baseline_version.version, 95, "control"),
        (rollout.candidate_version.version, 5, "canary"),
    }


def test_seed_demo_has_a_serving_model_older_than_its_slo(seeded):
    now = timezone.now()
    too_old = [
        a
        for a in TrafficAllocation.objects.filter(valid_to__isnull=True).select_related(
            "model_version", "deployment__application"
        )
        if now - a.model_version.trained_at > a.deployment.application.max_model_age
    ]

    assert [a.deployment.application.slug for a in too_old] == ["churn-prediction"]


def test_seed_demo_keeps_allocation_history(seeded):
    for deployment in Deployment.objects.all():
        closed = deployment.allocations.filter(valid_to__isnull=False)
        assert closed.exists(), deployment
        assert not closed.filter(valid_to__lt=F("valid_from")).exists()
    oldest = TrafficAllocation.objects.aggregate(m=Min("valid_from"))["m"]
    assert timezone.now() - oldest > timedelta(days=50)


def test_seed_demo_aliases_champion_and_challenger_with_history(seeded):
    champion = ModelAlias.objects.get(registered_model__name="home-feed-ranker", name="champion")
    challenger = ModelAlias.objects.get(
        registered_model__name="home-feed-ranker", name="challenger"
    )
    rollout = Rollout.objects.get(strategy=Rollout.Strategy.AB_TEST)

    assert champion.protected
    assert champion.version == rollout.baseline_version
    assert challenger.version == rollout.candidate_version
    assert AliasAssignment.objects.filter(alias=champion).count() == 3


def test_seed_demo_gives_each_demo_user_its_role(seeded):
    for username, (_, role, _) in DEMO_USERS.items():
        user = get_user_model().objects.get(username=username)
        assert user.is_superuser if role is None else user.groups.filter(name=role).exists()


def test_seed_demo_users_log_in_with_the_printed_password(seeded, client, settings):
    settings.PASSWORD_HASHERS = PBKDF2

    assert client.login(username="viewer", password=DEMO_USERS["viewer"][0])


def test_seed_demo_password_hashes_are_the_published_passwords(settings):
    settings.PASSWORD_HASHERS = PBKDF2

    for username, (password, _, _) in DEMO_USERS.items():
        assert check_password(password, DEMO_PASSWORD_HASHES[username]), username


def test_seed_demo_is_deterministic(seeded):
    # values drawn from the fixed seed: a seed from the clock would change them on every run
    version = ModelVersion.objects.get(registered_model__name="home-feed-ranker", version=30)

    assert version.metrics == GOLDEN_METRICS
    assert version.size_bytes == GOLDEN_SIZE


def test_seed_demo_does_nothing_without_debug(settings, capsys):
    settings.DEBUG = False
    before = _snapshot()

    call_command("seed_demo")

    assert _snapshot() == before
    assert "DEBUG is off" in capsys.readouterr().err
