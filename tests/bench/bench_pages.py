"""Page benchmark: every dashboard page and the status endpoint at fleet scale.

    make bench-pages      (or: .venv/bin/python tests/bench/bench_pages.py [--fresh])

Builds (once; reused while its row counts match) a scratch database <DATABASE_URL's name>
_bench_pages holding 500 applications, 2,000 registered models, 20,000 versions, 1,000
deployments, 4,000 replicas and 90 days of hourly quality rollups for every serving version
(several million rows), all loaded with COPY. Then:

1. server time of each page and of the status endpoints (one application, the fleet), in
   process through Django's test client: median and p95 over 50 requests, and the SQL
   queries per request, also measured on a 10-application slice of the fleet
   (`queries_flat`: the same count at both sizes);
2. throughput of the status endpoint and of /livez under 8 concurrent keep-alive clients
   for 20 s each, against gunicorn started as the Procfile (and `make run`) starts it;
3. throughput of replica heartbeats (POST /api/v1/replicas/heartbeat, each client cycling
   through the fleet's 4,000 replicas), printed on its own line before the last: how many
   replicas one web process pair can take at a given heartbeat interval.

The last line is exactly

    pages worst_median_ms=<n> worst_p95_ms=<n> status_rps=<n> livez_rps=<n>
          status_ratio=<status/livez> queries_flat=<yes|no>      (on one line)

Not part of `make test`.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import io
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.bench.bench_ingest import (  # noqa: E402
    free_port,
    log,
    recreate_database,
    server_env,
    start,
    stop,
    wait_until_serving,
)

APPS, MODELS, VERSIONS_PER_MODEL, REPLICAS_PER_DEPLOYMENT = 500, 2000, 10, 4
HOURS = 90 * 24
KINDS = ("impression", "conversion", "bad_recommendation", "label")
REQUESTS = 50
CLIENTS, SECONDS = 8, int(os.environ.get("BENCH_SECONDS", "20"))
NOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


def bench_db_url() -> tuple[str, str]:
    base = os.environ.get("DATABASE_URL", "")
    if not base.startswith(("postgres://", "postgresql://")):
        base = "postgres://postgres@127.0.0.1:5432/modelops"
    parts = urlsplit(base)
    name = parts.path.lstrip("/") or "modelops"
    url = os.environ.get("BENCH_PAGES_DATABASE_URL") or urlunsplit(
        parts._replace(path=f"/{name}_bench_pages")
    )
    return url, os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"


# --- Data, with COPY ---


def _ts(at: datetime) -> str:
    return at.isoformat()


def _copy(cur, table: str, columns: str, lines) -> int:
    """COPY text-format lines (already tab-separated) into `table`; returns the row count."""
    n = 0
    with cur.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
        buf = io.StringIO()
        for line in lines:
            buf.write(line)
            buf.write("\n")
            n += 1
            if n % 50_000 == 0:
                copy.write(buf.getvalue())
                buf = io.StringIO()
        copy.write(buf.getvalue())
    return n


def populate(db_url: str) -> None:
    """The fleet, straight into the tables (ids chosen here, sequences moved after)."""
    import psycopg

    t0 = time.perf_counter()
    with psycopg.connect(db_url) as conn, conn.cursor() as cur:
        # no foreign-key triggers while loading rows that are consistent by construction:
        # checking 9 million deferred references at COMMIT would take longer than the load
        cur.execute("SET session_replication_role = replica")
        ts = _ts(NOW)
        _copy(
            cur,
            "registry_application",
            "id, slug, name, team, criticality, max_model_age, description, created_at, updated_at",
            (
                f"{a}\tapp-{a:03d}\tApplication {a}\tteam-{a % 12}\t"
                f"{('low', 'medium', 'high', 'critical')[a % 4]}\t{(7 + a % 20) * 86400} seconds"
                f"\t\t{ts}\t{ts}"
                for a in range(1, APPS + 1)
            ),
        )
        _copy(
            cur,
            "registry_registeredmodel",
            "id, name, team, task, description, created_at, updated_at",
            (
                f"{m}\tmodel-{m:04d}\tml-{m % 9}\tranking\t\t{ts}\t{ts}"
                for m in range(1, MODELS + 1)
            ),
        )

        def versions():
            for m in range(1, MODELS + 1):
                for v in range(1, VERSIONS_PER_MODEL + 1):
                    vid = (m - 1) * VERSIONS_PER_MODEL + v
                    sha = hashlib.sha256(f"{m}-{v}".encode()).hexdigest()
                    trained = _ts(NOW - timedelta(days=(VERSIONS_PER_MODEL - v) * 9 + m % 7))
                    acc, auc = 0.8 + v / 100, 0.9 + v / 200
                    metrics = f'{{"accuracy": {acc:.3f}, "auc": {auc:.3f}}}'
                    yield (
                        f"{vid}\t{m}\t{v}\ts3://models/model-{m:04d}/{v}\t{sha}\t"
                        f"{50_000_000 + vid * 1000}\t{200_000_000 + vid}\tonnx\tpytorch\t"
                        f"{trained}\t\\N\t\t\t{metrics}\tproduction\t\\N\t{ts}\t{ts}"
                    )

        _copy(
            cur,
            "registry_modelversion",
            "id, registered_model_id, version, artifact_uri, sha256, size_bytes, memory_bytes, "
            "format, framework, trained_at, data_cutoff, source_commit, pipeline_url, metrics, "
            "stage, registered_by_id, created_at, updated_at",
            versions(),
        )
        # two deployments per application: prod (a model's latest version, 20 % canary) and
        # staging; application a uses model a (and a + 500 ... for the rest of the 2,000)
        deployments, allocations, replicas, rollouts, pairs = [], [], [], [], set()
        alloc_id = rep_id = 0
        for a in range(1, APPS + 1):
            for k, (name, env) in enumerate((("prod", "production"), ("staging", "staging"))):
                d = 2 * (a - 1) + k + 1
                deployments.append(
                    f"{d}\t{a}\t{name}\t{env}\thttps://{name}.app-{a:03d}.internal/predict\t"
                    f"{REPLICAS_PER_DEPLOYMENT}\t120 seconds\t300 seconds\t\\N\t{ts}\t{ts}"
                )
                model = a if k == 0 else a + APPS
                latest = (model - 1) * VERSIONS_PER_MODEL + VERSIONS_PER_MODEL
                split = [(latest - 1, 100, "control")]
                if k == 0 and a % 5 == 0:
                    split = [(latest - 1, 90, "control"), (latest, 10, "canary")]
                    rollouts.append((d, latest - 1, latest))
                # history: the previous version served until a week ago
                alloc_id += 1
                allocations.append(
                    f"{alloc_id}\t{d}\t{latest - 2}\t100\tcontrol\t"
                    f"{_ts(NOW - timedelta(days=40))}\t{_ts(NOW - timedelta(days=7))}"
                )
                for vid, weight, role in split:
                    alloc_id += 1
                    pairs.add((a, vid))
                    allocations.append(
                        f"{alloc_id}\t{d}\t{vid}\t{weight}\t{role}\t"
                        f"{_ts(NOW - timedelta(days=7))}\t\\N"
                    )
                for r in range(REPLICAS_PER_DEPLOYMENT):
                    rep_id += 1
                    vid = split[0][0]
                    model_no, number = divmod(vid - 1, VERSIONS_PER_MODEL)
                    sha = hashlib.sha256(f"{model_no + 1}-{number + 1}".encode()).hexdigest()
                    beat = NOW if (a + r) % 37 else NOW - timedelta(hours=1)  # a few stale
                    replicas.append(
                        f"{rep_id}\t{d}\tpod-{r}\t10.{a % 250}.{k}.{r}\t\t{vid}\t{sha}\t"
                        f"{ts}\t{_ts(beat)}\t\\N\t\t{ts}\t{ts}"
                    )
        _copy(
            cur,
            "registry_deployment",
            "id, application_id, name, environment, endpoint_url, desired_replicas, "
            "heartbeat_timeout, probe_interval, next_probe_at, created_at, updated_at",
            deployments,
        )
        _copy(
            cur,
            "registry_trafficallocation",
            "id, deployment_id, model_version_id, weight, role, valid_from, valid_to",
            allocations,
        )
        _copy(
            cur,
            "registry_replica",
            "id, deployment_id, instance_id, host, url, reported_version_id, reported_sha256, "
            "started_at, last_heartbeat_at, last_probe_at, last_probe_verdict, created_at, "
            "updated_at",
            replicas,
        )
        started = _ts(NOW - timedelta(days=2))
        steps = '[{"percent": 10, "min_duration_s": 3600, "min_sample": 1000}, ' \
                '{"percent": 50, "min_duration_s": 3600, "min_sample": 1000}]'  # fmt: skip
        guard = '[{"metric": "conversion_rate", "max_drop": 0.05, "min_sample": 100}]'
        _copy(
            cur,
            "registry_rollout",
            "id, deployment_id, strategy, baseline_version_id, candidate_version_id, state, "
            "steps, current_step, step_started_at, guardrails, on_failure, started_at, "
            "finished_at, created_by_id, created_at, updated_at",
            (
                f"{i}\t{d}\tcanary\t{b}\t{c}\trunning\t{steps}\t0\t{started}\t{guard}\tpause\t"
                f"{started}\t\\N\t\\N\t{started}\t{started}"
                for i, (d, b, c) in enumerate(rollouts, start=1)
            ),
        )
        _copy(
            cur,
            "registry_auditevent",
            "id, at, actor_id, actor_label, kind, application_id, target_type, target_id, "
            "target_repr, reason, before, after",
            (
                f"{i}\t{_ts(NOW - timedelta(minutes=7 * i))}\t\\N\tci-pipeline\t"
                f"{('allocation.changed', 'version.registered', 'alias.moved')[i % 3]}\t"
                f"{i % APPS + 1}\tDeployment\t{i % (2 * APPS) + 1}\tapp/prod\tnightly\t\\N\t\\N"
                for i in range(1, 20_001)
            ),
        )
        log(f"registry rows loaded ({time.perf_counter() - t0:.0f} s); rollups next")

        def rollups():
            hours = [_ts(NOW - timedelta(hours=h)) for h in range(HOURS)]
            for a, vid in sorted(pairs):
                for h, hour in enumerate(hours):
                    imp = 900 + (h * 7 + vid) % 200
                    yield f"{a}\t{vid}\timpression\t{hour}\t{imp}\t0\t0\t0\t0"
                    conv = imp // 20
                    value, value_sq = conv * 20.0, conv * 400.0
                    yield f"{a}\t{vid}\tconversion\t{hour}\t{conv}\t{value}\t{value_sq}\t0\t0"
                    yield f"{a}\t{vid}\tbad_recommendation\t{hour}\t{imp // 50}\t0\t0\t0\t0"
                    yield f"{a}\t{vid}\tlabel\t{hour}\t100\t0\t0\t{80 + (h + vid) % 10}\t100"

        n = _copy(
            cur,
            "feedback_qualityrollup",
            "application_id, model_version_id, kind, hour, count, sum, sum_sq, correct, labelled",
            rollups(),
        )
        for table in (
            "registry_application",
            "registry_registeredmodel",
            "registry_modelversion",
            "registry_deployment",
            "registry_trafficallocation",
            "registry_replica",
            "registry_rollout",
            "registry_auditevent",
        ):
            cur.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT max(id) FROM {table}))"
            )
        conn.commit()
        cur.execute("ANALYZE")
    log(f"fleet loaded: {n:,} rollup rows in {time.perf_counter() - t0:.0f} s")


def populated(db_url: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(db_url) as conn:
            apps = conn.execute("SELECT count(*) FROM registry_application").fetchone()[0]
            versions = conn.execute("SELECT count(*) FROM registry_modelversion").fetchone()[0]
            rollups = conn.execute("SELECT count(*) > 0 FROM feedback_qualityrollup").fetchone()[0]
    except psycopg.Error:
        return False
    return apps == APPS and versions == MODELS * VERSIONS_PER_MODEL and rollups


# --- Server time, in process ---


def _time(client, url: str, headers: dict[str, str]) -> tuple[list[float], int]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    times, cpu = [], []
    queries = 0
    for i in range(REQUESTS + 2):
        with CaptureQueriesContext(connection) as ctx:
            t, c = time.perf_counter(), time.process_time()
            response = client.get(url, **headers)
            elapsed, used = time.perf_counter() - t, time.process_time() - c
        assert response.status_code == 200, (url, response.status_code)
        if i >= 2:  # two warm-up requests (connection, template and URL caches)
            times.append(elapsed * 1000)
            cpu.append(used * 1000)
            queries = len(ctx.captured_queries)
    # CPU of this process alone: what the page costs when the box is not shared
    log(f"    cpu median {statistics.median(cpu):.1f} ms for {url}")
    return times, queries


def _p95(values: list[float]) -> float:
    return sorted(values)[max(0, int(round(0.95 * len(values))) - 1)]


def page_urls(slug: str) -> dict[str, str]:
    from registry.models import Application, Rollout

    app = Application.objects.get(slug=slug)
    dep = app.deployments.order_by("name").first()
    rollout = Rollout.objects.filter(deployment__application=app).first()
    model = dep.allocations.filter(valid_to__isnull=True).first().model_version.registered_model
    return {
        "home": "/",
        "application": f"/applications/{slug}/",
        "model": f"/models/{model.name}/",
        "rollout": f"/rollouts/{rollout.pk}/" if rollout else None,
        "replicas": "/replicas/",
        "deployment_replicas": f"/deployments/{dep.pk}/replicas/",
        "audit": "/audit/",
        "status": f"/api/v1/applications/{slug}/status",
        "fleet_status": "/api/v1/status",
    }


def measure_pages() -> tuple[dict[str, tuple[float, float, int]], str]:
    from django.contrib.auth.models import Group, User
    from django.test import Client

    from registry.models import ApiToken
    from registry.roles import Actor
    from registry.services import create_api_token

    user, _ = User.objects.get_or_create(username="bench-devops")
    user.groups.add(Group.objects.get_or_create(name="devops")[0])
    ApiToken.objects.filter(user=user).delete()
    _, raw = create_api_token(
        actor=Actor.system("bench"), user=user, name="bench", scopes=["read"],
        ttl=timedelta(days=1),
    )  # fmt: skip
    client = Client()
    client.force_login(user)
    bearer = {"HTTP_AUTHORIZATION": f"Bearer {raw}"}
    results = {}
    for page, url in page_urls("app-005").items():
        if url is None:
            continue
        times, queries = _time(client, url, bearer if page.endswith("status") else {})
        results[page] = (statistics.median(times), _p95(times), queries)
        log(
            f"{page:20s} median {results[page][0]:7.1f} ms  p95 {results[page][1]:7.1f} ms  "
            f"{queries:3d} queries  {url}"
        )
    return results, raw


def small_fleet_queries() -> dict[str, int]:
    """Queries per page on a 10-application slice of the same fleet.

    The slice is cut inside a transaction that is rolled back; Django's foreign keys are
    DEFERRABLE INITIALLY DEFERRED, so the rows left pointing at deleted ones are never checked.
    """
    from django.contrib.auth.models import User
    from django.db import connection, transaction
    from django.test import Client

    counts = {}
    with transaction.atomic():
        with connection.cursor() as cur:
            for sql in (
                "DELETE FROM registry_auditevent WHERE application_id > 10",
                "DELETE FROM registry_rollout WHERE deployment_id > 20",
                "DELETE FROM registry_replica WHERE deployment_id > 20",
                "DELETE FROM registry_trafficallocation WHERE deployment_id > 20",
                "DELETE FROM registry_deployment WHERE application_id > 10",
                "DELETE FROM registry_application WHERE id > 10",
            ):
                cur.execute(sql)
        client = Client()
        client.force_login(User.objects.get(username="bench-devops"))
        for page, url in page_urls("app-005").items():
            if url is not None and not page.endswith("status"):
                counts[page] = _time_once(client, url)[1]
        transaction.set_rollback(True)
    return counts


def _time_once(client, url: str) -> tuple[float, int]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client.get(url)
    with CaptureQueriesContext(connection) as ctx:
        t = time.perf_counter()
        client.get(url)
    return time.perf_counter() - t, len(ctx.captured_queries)


# --- Throughput against gunicorn ---


def _client(args: tuple[int, str, dict[str, str], float, list[bytes]]) -> tuple[int, int]:
    """One keep-alive client: requests until `until` (POSTs of `bodies` in turn, if any,
    else GETs); (answered, failed) counts."""
    port, path, headers, until, bodies = args
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    done = failed = 0
    method = "POST" if bodies else "GET"
    headers = {**headers, "Connection": "keep-alive"}
    if bodies:
        headers["Content-Type"] = "application/json"
    while time.time() < until:
        try:
            body = bodies[done % len(bodies)] if bodies else None
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            conn.close()  # a reset or a stall: count it and reconnect
            failed += 1
            continue
        if response.status != 200:
            raise SystemExit(f"{path}: HTTP {response.status}")
        done += 1
        if response.will_close:
            conn.close()  # the server closed; reconnect as a keep-alive client would
    return done, failed


def throughput(
    port: int, path: str, headers: dict[str, str], bodies: list[bytes] | None = None
) -> float:
    """Requests per second answered 200 by `CLIENTS` keep-alive clients over SECONDS; with
    `bodies`, POSTs, client i starting at the i-th share of them."""
    until = time.time() + SECONDS
    bodies = bodies or []
    share = len(bodies) // CLIENTS
    jobs = [(port, path, headers, until, bodies[i * share :] + bodies[: i * share])
            for i in range(CLIENTS)]  # fmt: skip
    with multiprocessing.get_context("fork").Pool(CLIENTS) as pool:
        counts = pool.map(_client, jobs)
    failed = sum(f for _, f in counts)
    if failed:
        log(f"{path}: {failed} requests failed (not counted)")
    return sum(d for d, _ in counts) / SECONDS


def heartbeats() -> tuple[str, list[bytes]]:
    """A replica:write token, and one heartbeat body per replica of the fleet (each
    reporting the artifact it was loaded with)."""
    import json

    from django.contrib.auth.models import User

    from registry.models import ApiToken, Replica
    from registry.roles import Actor
    from registry.services import create_api_token

    user = User.objects.get(username="bench-devops")  # measure_pages made it a devops user
    _, raw = create_api_token(
        actor=Actor.system("bench"), user=user, name="bench-replicas",
        scopes=[ApiToken.Scope.REPLICA_WRITE], ttl=timedelta(days=1),
    )  # fmt: skip
    rows = Replica.objects.order_by("pk").values_list(
        "deployment_id", "instance_id", "host", "reported_sha256"
    )
    bodies = [
        json.dumps({"deployment": d, "instance_id": i, "host": h, "sha256": sha}).encode()
        for d, i, h, sha in rows
    ]
    return raw, bodies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fresh", action="store_true", help="rebuild the fleet database")
    args = parser.parse_args()
    db_url, redis_url = bench_db_url()
    build = args.fresh or not populated(db_url)
    if build:
        log(f"building the fleet in {urlsplit(db_url).path.lstrip('/')}")
        recreate_database(db_url)
    subprocess.run(  # also brings a reused fleet up to the migrations written since
        [str(ROOT / ".venv/bin/python"), "manage.py", "migrate", "--no-input", "-v", "0"],
        cwd=ROOT,
        env=server_env(db_url, redis_url, 0),
        check=True,
    )
    if build:
        populate(db_url)
    # DEBUG off as in production: pages name their static files through the manifest
    subprocess.run(
        [str(ROOT / ".venv/bin/python"), "manage.py", "collectstatic", "--no-input", "-v", "0"],
        cwd=ROOT,
        env=server_env(db_url, redis_url, 0),
        check=True,
    )
    os.environ.update(server_env(db_url, redis_url, 0))
    import django

    django.setup()
    from django.conf import settings

    settings.ALLOWED_HOSTS = ["*"]
    results, raw = measure_pages()
    small = small_fleet_queries()
    flat = all(small[p] == results[p][2] for p in small)
    for p in small:
        log(f"queries {p}: {small[p]} at 10 applications, {results[p][2]} at {APPS}")
    port = free_port()
    web = start("web", server_env(db_url, redis_url, port))
    try:
        wait_until_serving(port)
        status_path = "/api/v1/applications/app-005/status"
        bearer = {"Authorization": f"Bearer {raw}"}
        status_rps = throughput(port, status_path, bearer)
        log(f"status: {status_rps:.0f} requests/s with {CLIENTS} clients")
        livez_rps = throughput(port, "/livez", {})
        log(f"livez:  {livez_rps:.0f} requests/s with {CLIENTS} clients")
        replica_token, beats = heartbeats()
        beat_rps = throughput(
            port, "/api/v1/replicas/heartbeat", {"Authorization": f"Bearer {replica_token}"}, beats
        )
        log(f"heartbeats: {beat_rps:.0f} requests/s with {CLIENTS} clients")
    finally:
        stop(web)
    print(
        f"heartbeats heartbeat_rps={beat_rps:.0f} replicas={len(beats)} "
        f"replicas_at_15s_interval={beat_rps * 15:.0f}",
        flush=True,
    )
    pages = {k: v for k, v in results.items()}
    worst_median = max(v[0] for v in pages.values())
    worst_p95 = max(v[1] for v in pages.values())
    print(
        f"pages worst_median_ms={worst_median:.0f} worst_p95_ms={worst_p95:.0f} "
        f"status_rps={status_rps:.0f} livez_rps={livez_rps:.0f} "
        f"status_ratio={status_rps / livez_rps:.2f} queries_flat={'yes' if flat else 'no'}",
        flush=True,
    )


if __name__ == "__main__":
    main()
