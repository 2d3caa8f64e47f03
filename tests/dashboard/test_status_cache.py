"""The status endpoint's cache: fast when nothing changed, never stale when something did.

Each invalidation test warms the cache (the first request only learns the application's id,
the second stores the body, the third must be a hit), makes one change through the real
write path, and checks that the very next response shows it.
"""

from datetime import timedelta

import time_machine
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from dashboard import status_cache
from feedback.models import QualityRollup
from registry import status_generation
from registry.models import Application, ConsistencyCheck, Rollout

NO_QUERIES_BUT_AUTH = 1  # a warm hit reads nothing from the database but the bearer token


def status_url(slug):
    return reverse("application-status", kwargs={"slug": slug})


def warm(client, slug="home-feed"):
    """Two requests: the cache now holds the body; returns the second response's JSON."""
    client.get(status_url(slug))
    response = client.get(status_url(slug))
    assert response.status_code == 200
    return response.json()


def get(client, slug="home-feed"):
    response = client.get(status_url(slug))
    assert response.status_code == 200
    return response.json()


def prod(body):
    return body["deployments"][0]


# --- Hits ---


def test_a_warm_hit_reads_nothing_from_the_database(api_client, serving, django_assert_num_queries):
    warm(api_client)

    with django_assert_num_queries(0):  # api_client is session-authenticated in memory
        response = api_client.get(status_url("home-feed"))

    assert response.status_code == 200
    assert response.json()["application"]["slug"] == "home-feed"


def test_a_warm_hit_with_a_bearer_token_costs_only_the_token_query(
    token_client, viewer_user, serving, django_assert_max_num_queries
):
    client = token_client(viewer_user, "read")
    warm(client)

    with django_assert_max_num_queries(NO_QUERIES_BUT_AUTH):
        response = client.get(status_url("home-feed"))

    assert response.status_code == 200


def test_a_hit_answers_the_same_body_as_a_miss_with_fresh_ages(api_client, serving):
    app, dep, control, canary = serving
    first = api_client.get(status_url("home-feed")).json()
    warm(api_client)

    with time_machine.travel(timezone.now() + timedelta(seconds=30), tick=False):
        hit = get(api_client)

    for before, after in zip(prod(first)["versions"], prod(hit)["versions"], strict=True):
        assert after["age_seconds"] - before["age_seconds"] in (29, 30, 31)
        after["age_seconds"] = before["age_seconds"]
    assert hit == first


def test_applications_do_not_share_entries(api_client, serving, make_fleet):
    [other] = make_fleet(apps=1)
    warm(api_client)
    warm(api_client, other.slug)

    assert get(api_client)["application"]["slug"] == "home-feed"
    assert get(api_client, other.slug)["application"]["slug"] == other.slug


def test_a_hit_keeps_the_etag_and_answers_304(api_client, serving):
    etag = api_client.get(status_url("home-feed"))["ETag"]
    warm(api_client)

    hit = api_client.get(status_url("home-feed"))
    not_modified = api_client.get(status_url("home-feed"), HTTP_IF_NONE_MATCH=etag)

    assert hit["ETag"] == etag
    assert not_modified.status_code == 304
    assert not_modified.content == b""
    assert not_modified["ETag"] == etag


def test_a_hit_renders_for_other_media_types_too(api_client, serving):
    expected = warm(api_client)

    response = api_client.get(status_url("home-feed"), HTTP_ACCEPT="application/json; indent=2")

    assert response.content.startswith(b"{\n  ")
    assert response.json()["deployments"] == expected["deployments"]


def test_without_a_reachable_store_it_answers_uncached(api_client, serving, monkeypatch):
    def down(*args, **kwargs):
        raise ConnectionError("store down")

    monkeypatch.setattr(status_generation.store(), "get", down)

    assert get(api_client)["application"]["slug"] == "home-feed"


def test_max_age_zero_turns_the_cache_off(api_client, serving, settings, django_assert_num_queries):
    settings.STATUS_CACHE_MAX_AGE_S = 0
    warm(api_client)

    with django_assert_num_queries(7):
        get(api_client)


# --- Writes: each path that changes the status shows on the next request ---


def test_an_allocation_change_shows_at_once(api_client, serving, devops_actor):
    from registry.services import AllocationSpec, set_allocation

    app, dep, control, canary = serving
    warm(api_client)

    set_allocation(
        actor=devops_actor,
        deployment=dep,
        allocations=[AllocationSpec(model_version=canary, weight=100)],
    )

    assert [v["weight"] for v in prod(get(api_client))["versions"]] == [100]


def test_a_new_heartbeat_shows_in_the_replica_counts(api_client, serving):
    from registry.services import record_heartbeat

    app, dep, control, canary = serving
    assert prod(warm(api_client))["replicas"]["reporting"] == 0

    record_heartbeat(deployment=dep, instance_id="pod-1", model_version=control)

    assert prod(get(api_client))["replicas"]["reporting"] == 1


def test_a_heartbeat_with_another_artifact_shows_as_mismatched(
    api_client, serving, model_version_factory
):
    from registry.services import record_heartbeat

    app, dep, control, canary = serving
    record_heartbeat(deployment=dep, instance_id="pod-1", model_version=control)
    assert prod(warm(api_client))["replicas"]["mismatched"] == 0

    record_heartbeat(deployment=dep, instance_id="pod-1", sha256=model_version_factory().sha256)

    assert prod(get(api_client))["replicas"]["mismatched"] == 1


def test_a_stale_replica_reporting_again_shows_at_once(api_client, serving):
    from registry.services import record_heartbeat

    app, dep, control, canary = serving
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        record_heartbeat(deployment=dep, instance_id="pod-1", model_version=control)
    later = start + dep.heartbeat_timeout + timedelta(minutes=1)
    with time_machine.travel(later, tick=False):
        assert prod(warm(api_client))["replicas"]["stale"] == 1

        record_heartbeat(deployment=dep, instance_id="pod-1", model_version=control)

        assert prod(get(api_client))["replicas"]["reporting"] == 1


def test_a_heartbeat_that_changes_nothing_keeps_the_cached_body(
    api_client, serving, django_assert_num_queries
):
    from registry.services import record_heartbeat

    app, dep, control, canary = serving
    record_heartbeat(deployment=dep, instance_id="pod-1", model_version=control)
    warm(api_client)
    generation = status_generation.current(app.pk)

    record_heartbeat(deployment=dep, instance_id="pod-1", model_version=control)

    assert status_generation.current(app.pk) == generation
    with django_assert_num_queries(0):
        assert prod(get(api_client))["replicas"]["reporting"] == 1


def test_a_heartbeat_committing_after_its_replica_went_stale_bumps(
    serving, django_capture_on_commit_callbacks
):
    """Fresh when it arrived, stale by the time it committed: a reader may have cached the
    replica as stale in between, so the commit moves the generation."""
    from registry.services import record_heartbeat

    app, dep, control, canary = serving
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        record_heartbeat(deployment=dep, instance_id="pod-1", model_version=control)
    arrives = start + dep.heartbeat_timeout - timedelta(seconds=30)
    with time_machine.travel(arrives, tick=False):
        with django_capture_on_commit_callbacks() as callbacks:
            record_heartbeat(deployment=dep, instance_id="pod-1", model_version=control)
    generation = status_generation.current(app.pk)

    with time_machine.travel(start + dep.heartbeat_timeout + timedelta(seconds=1), tick=False):
        for callback in callbacks:
            callback()

    assert status_generation.current(app.pk) != generation


def test_a_replica_goes_stale_when_its_heartbeat_ages_past_the_timeout(api_client, serving):
    from registry.services import record_heartbeat

    app, dep, control, canary = serving
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        record_heartbeat(deployment=dep, instance_id="pod-1", model_version=control)
        assert prod(warm(api_client))["replicas"]["reporting"] == 1

    with time_machine.travel(start + dep.heartbeat_timeout - timedelta(seconds=1), tick=False):
        assert prod(get(api_client))["replicas"]["reporting"] == 1
    with time_machine.travel(start + dep.heartbeat_timeout + timedelta(seconds=1), tick=False):
        replicas = prod(get(api_client))["replicas"]

    assert (replicas["reporting"], replicas["stale"]) == (0, 1)


def test_a_version_breaches_its_slo_when_its_age_crosses_it(api_client, serving):
    app, dep, control, canary = serving  # canary: 2 h old, SLO 24 h
    crossing = canary.trained_at + app.max_model_age
    with time_machine.travel(crossing - timedelta(seconds=5), tick=False):
        assert prod(warm(api_client))["versions"][1]["slo_breached"] is False

    with time_machine.travel(crossing + timedelta(seconds=2), tick=False):
        assert prod(get(api_client))["versions"][1]["slo_breached"] is True


def test_online_accuracy_follows_the_sliding_window(api_client, serving):
    from feedback.selectors import ONLINE_WINDOW

    app, dep, control, canary = serving
    now = timezone.now()
    hour = now.replace(minute=0, second=0, microsecond=0)
    QualityRollup.objects.create(
        application=app, model_version=control, kind="label", hour=hour - timedelta(hours=3),
        count=10, correct=9, labelled=10,
    )  # fmt: skip
    QualityRollup.objects.create(
        application=app, model_version=control, kind="label", hour=hour - timedelta(hours=1),
        count=10, correct=5, labelled=10,
    )  # fmt: skip
    leaves = hour - timedelta(hours=3) + ONLINE_WINDOW  # the older hour's last instant in
    with time_machine.travel(leaves - timedelta(seconds=10), tick=False):
        assert prod(warm(api_client))["versions"][0]["online_accuracy"] == 0.7

    with time_machine.travel(leaves + timedelta(seconds=1), tick=False):
        assert prod(get(api_client))["versions"][0]["online_accuracy"] == 0.5


def test_a_rollout_step_shows_at_once(api_client, serving, rollout_factory, devops_actor):
    from registry.services import advance_rollout

    app, dep, control, canary = serving
    rollout = rollout_factory(
        deployment=dep,
        baseline_version=control,
        candidate_version=canary,
        state="running",
        steps=[{"percent": 10}, {"percent": 50}, {"percent": 100}],
    )
    assert prod(warm(api_client))["active_rollout"]["step_index"] == 0

    advance_rollout(actor=devops_actor, rollout_id=rollout.pk, reason="healthy")

    active = prod(get(api_client))["active_rollout"]
    assert (active["step_index"], active["percent"]) == (1, 50)


def test_a_paused_rollout_shows_at_once(api_client, serving, rollout_factory, devops_actor):
    from registry.services import pause_rollout

    app, dep, control, canary = serving
    rollout = rollout_factory(
        deployment=dep, baseline_version=control, candidate_version=canary, state="running"
    )
    warm(api_client)

    pause_rollout(actor=devops_actor, rollout_id=rollout.pk, reason="looks off")

    body = prod(get(api_client))
    assert body["active_rollout"]["state"] == Rollout.State.PAUSED
    assert [v["weight"] for v in body["versions"]] == [100]


def test_an_alert_firing_and_resolving_shows_at_once(api_client, serving):
    from feedback.services.alerts import raise_alert, resolve_alert

    app, dep, control, canary = serving
    warm(api_client)

    raise_alert(
        rule_key="replica-probe-mismatch",
        target_key=f"d:{dep.pk}",
        summary="2 replicas disagree",
        application=app,
        deployment=dep,
    )
    assert [a["message"] for a in get(api_client)["firing_alerts"]] == ["2 replicas disagree"]

    resolve_alert(rule_key="replica-probe-mismatch", target_key=f"d:{dep.pk}")
    assert get(api_client)["firing_alerts"] == []


def test_renaming_an_alert_rule_shows_in_its_firing_alerts(api_client, serving, devops_actor):
    from feedback.models import AlertRule
    from feedback.services.alerts import raise_alert, update_alert_rule

    app, dep, control, canary = serving
    raise_alert(rule_key="replica-probe-mismatch", target_key="x", summary="s", application=app)
    warm(api_client)

    rule = AlertRule.objects.get(key="replica-probe-mismatch")
    update_alert_rule(actor=devops_actor, rule=rule, name="Replicas disagree (renamed)")

    assert get(api_client)["firing_alerts"][0]["name"] == "Replicas disagree (renamed)"


def test_a_consistency_check_shows_at_once(api_client, serving, system_actor):
    from registry.services import record_heartbeat
    from registry.services.probes import ProbeOptions, probe_deployment

    app, dep, control, canary = serving
    record_heartbeat(
        deployment=dep, instance_id="pod-1", model_version=control, url="http://127.0.0.1:9"
    )
    assert prod(warm(api_client))["replicas"]["last_check_outcome"] == ""

    check = probe_deployment(deployment=dep, actor=system_actor, options=ProbeOptions(timeout=0.2))

    assert prod(get(api_client))["replicas"]["last_check_outcome"] == check.outcome != ""


def test_pruning_the_latest_check_shows_at_once(api_client, serving, system_actor):
    from registry.services.probes import prune_consistency_checks

    app, dep, control, canary = serving
    ConsistencyCheck.objects.create(
        deployment=dep,
        started_at=timezone.now() - timedelta(days=40),
        finished_at=timezone.now() - timedelta(days=40),
        outcome="consistent",
    )
    assert prod(warm(api_client))["replicas"]["last_check_outcome"] == "consistent"

    prune_consistency_checks(older_than=timedelta(days=30))

    assert prod(get(api_client))["replicas"]["last_check_outcome"] == ""


def test_an_application_edit_shows_at_once(api_client, serving, devops_actor):
    from registry.services import update_application

    app, dep, control, canary = serving
    warm(api_client)

    update_application(actor=devops_actor, application=app, max_model_age=timedelta(days=3))

    body = get(api_client)
    assert body["application"]["max_model_age_s"] == 3 * 86400
    assert prod(body)["versions"][0]["slo_breached"] is False


def test_an_admin_edit_shows_at_once(admin_client, api_client, serving):
    app, dep, control, canary = serving
    warm(api_client)

    response = admin_client.post(
        reverse("admin:registry_application_change", args=[app.pk]),
        {
            "slug": "home-feed",
            "name": "Home feed (admin)",
            "team": "growth",
            "criticality": "high",
            "max_model_age": "1 00:00:00",
            "description": "",
        },
    )

    assert response.status_code == 302, response.content[:2000]
    assert get(api_client)["application"]["name"] == "Home feed (admin)"


def test_a_renamed_application_is_gone_from_its_old_slug(api_client, serving):
    app, dep, control, canary = serving
    warm(api_client)

    app.slug = "home-feed-v2"
    app.save()

    assert api_client.get(status_url("home-feed")).status_code == 404
    assert get(api_client, "home-feed-v2")["application"]["slug"] == "home-feed-v2"


def test_a_deleted_application_is_404_at_once(api_client, application_factory):
    app = application_factory(slug="short-lived")
    warm(api_client, "short-lived")

    Application.objects.filter(pk=app.pk).delete()

    assert api_client.get(status_url("short-lived")).status_code == 404


def test_editing_a_serving_version_shows_at_once(api_client, serving):
    app, dep, control, canary = serving
    warm(api_client)

    control.metrics = {"accuracy": 0.75}
    control.save()

    assert prod(get(api_client))["versions"][0]["offline_accuracy"] == 0.75


def test_renaming_a_serving_model_shows_at_once(api_client, serving):
    app, dep, control, canary = serving
    warm(api_client)

    control.registered_model.name = "renamed-model"
    control.registered_model.save()

    assert {v["model"] for v in prod(get(api_client))["versions"]} == {"renamed-model"}


def test_a_deployment_edit_shows_at_once(api_client, serving):
    app, dep, control, canary = serving
    warm(api_client)

    dep.desired_replicas = 9
    dep.save()

    assert prod(get(api_client))["replicas"]["expected"] == 9


def test_a_labelled_feedback_rollup_shows_once_its_writer_bumps(api_client, serving):
    """Ingest upserts rollups in raw SQL (no signal): it calls status_generation.bump."""
    app, dep, control, canary = serving
    assert prod(warm(api_client))["versions"][0]["online_accuracy"] is None
    hour = timezone.now().replace(minute=0, second=0, microsecond=0)

    table = connection.ops.quote_name(QualityRollup._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (application_id, model_version_id, kind, hour, count, sum, "
            "sum_sq, correct, labelled) VALUES (%s, %s, 'label', %s, 4, 0, 0, 3, 4)",
            [app.pk, control.pk, hour],
        )
    status_generation.bump([app.pk])

    assert prod(get(api_client))["versions"][0]["online_accuracy"] == 0.75


def test_ingested_labelled_feedback_shows_at_once(api_client, serving):
    from feedback.services.event_checks import Candidate
    from feedback.services.ingest import add_to_rollups

    app, dep, control, canary = serving
    warm(api_client)

    labelled = Candidate(
        index=0, event_id="e-1", occurred_at=timezone.now(), app_slug=app.slug, kind="label",
        value=None, prediction=1, label=1, request_id="", segment="", payload={},
        version_ref=None, role=None, application_id=app.pk, model_version_id=control.pk,
        correct=True,
    )  # fmt: skip
    add_to_rollups([labelled])

    assert prod(get(api_client))["versions"][0]["online_accuracy"] == 1.0


# --- The generation protocol ---


def test_a_body_computed_before_a_bump_is_never_served_after_it(serving, monkeypatch):
    """A reader that read the generation, then computed while a writer committed and bumped,
    stores its body under the old generation: nobody can reach it any more."""
    app, dep, control, canary = serving

    def render(status, clock):
        from dashboard.api import _application_payload

        return _application_payload(status, clock)

    status_cache.application_entry("home-feed", render)  # learns the id
    real_build = status_cache._build

    def build_then_a_writer_commits(*args, **kwargs):
        entry = real_build(*args, **kwargs)
        status_generation.bump_now([app.pk])  # the writer's bump lands after our read
        return entry

    monkeypatch.setattr(status_cache, "_build", build_then_a_writer_commits)
    raced = status_cache.application_entry("home-feed", render)
    monkeypatch.setattr(status_cache, "_build", real_build)

    again = status_cache.application_entry("home-feed", render)
    assert raced.generation != status_generation.current(app.pk)
    assert again.generation == status_generation.current(app.pk)


def test_a_warm_hit_with_a_bearer_token_is_one_cache_round_trip(
    token_client, viewer_user, serving, monkeypatch
):
    client = token_client(viewer_user, "read")
    warm(client)
    store = status_generation.store()
    calls, depth = [], [0]

    def counted(name, real):
        def call(*args, **kwargs):
            if not depth[0]:  # a backend's get_many may call its own get: one call still
                calls.append(name)
            depth[0] += 1
            try:
                return real(*args, **kwargs)
            finally:
                depth[0] -= 1

        return call

    for name in ("get", "get_many", "add", "set", "set_many"):
        monkeypatch.setattr(store, name, counted(name, getattr(store, name)))

    assert client.get(status_url("home-feed")).status_code == 200
    assert calls == ["get_many"]  # token, its generation, the entry and its generation


# --- The fleet: the same entries, read together ---

FLEET = reverse("fleet-status")


def fleet(client) -> dict:
    response = client.get(FLEET)
    assert response.status_code == 200
    return {a["application"]["slug"]: a for a in response.json()["applications"]}


def test_the_fleet_and_the_application_answer_the_same_entry(api_client, serving):
    warm(api_client)
    api_client.get(FLEET)

    assert fleet(api_client)["home-feed"] == get(api_client)


def test_the_fleet_cached_answers_what_the_fleet_uncached_does(api_client, serving, settings):
    fleet(api_client)
    cached = fleet(api_client)
    settings.STATUS_CACHE_MAX_AGE_S = 0

    assert fleet(api_client) == cached


def test_an_allocation_change_shows_at_once_in_the_fleet(api_client, serving, devops_actor):
    from registry.services import AllocationSpec, set_allocation

    app, dep, control, canary = serving
    fleet(api_client)
    fleet(api_client)

    set_allocation(
        actor=devops_actor,
        deployment=dep,
        allocations=[AllocationSpec(model_version=canary, weight=100)],
    )

    assert [v["weight"] for v in prod(fleet(api_client)["home-feed"])["versions"]] == [100]


def test_a_replica_going_stale_shows_in_the_fleet_without_a_write(api_client, serving):
    from registry.services import record_heartbeat

    app, dep, control, canary = serving
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        record_heartbeat(deployment=dep, instance_id="pod-1", model_version=control)
        fleet(api_client)
        assert prod(fleet(api_client)["home-feed"])["replicas"]["reporting"] == 1

    with time_machine.travel(start + dep.heartbeat_timeout + timedelta(seconds=1), tick=False):
        replicas = prod(fleet(api_client)["home-feed"])["replicas"]

    assert (replicas["reporting"], replicas["stale"]) == (0, 1)


def test_an_application_created_or_deleted_shows_in_the_fleet_at_once(
    api_client, serving, application_factory
):
    fleet(api_client)
    fleet(api_client)
    created = application_factory(slug="aa-new")

    assert list(fleet(api_client)) == ["aa-new", "home-feed"]
    created.delete()
    assert list(fleet(api_client)) == ["home-feed"]


def test_the_fleet_etag_holds_until_an_application_changes(api_client, serving, devops_actor):
    from registry.services import update_application

    etag = api_client.get(FLEET)["ETag"]
    assert api_client.get(FLEET, HTTP_IF_NONE_MATCH=etag).status_code == 304

    update_application(actor=devops_actor, application=serving[0], team="x")

    assert api_client.get(FLEET, HTTP_IF_NONE_MATCH=etag).status_code == 200


def test_without_a_reachable_store_the_fleet_answers_uncached(api_client, serving, monkeypatch):
    def down(*args, **kwargs):
        raise ConnectionError("store down")

    monkeypatch.setattr(status_generation.store(), "get_many", down)

    assert "home-feed" in fleet(api_client)


def test_a_slug_passed_to_another_application_shows_the_new_owner_in_the_fleet(
    api_client, serving, application_factory
):
    app, dep, control, canary = serving
    fleet(api_client)
    fleet(api_client)  # an entry for home-feed, of this application, is cached
    app.slug = "home-feed-old"
    app.save()
    newcomer = application_factory(slug="home-feed", name="Newcomer")

    apps = fleet(api_client)

    assert apps["home-feed"]["application"]["name"] == "Newcomer"
    assert apps["home-feed"]["deployments"] == []
    assert prod(apps["home-feed-old"])["versions"]
    assert newcomer.pk != app.pk
