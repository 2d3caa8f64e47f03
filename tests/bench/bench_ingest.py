"""Ingest benchmark: 1,000,000 events through the public API, against the raw COPY rate.

    make bench-ingest      (or: .venv/bin/python tests/bench/bench_ingest.py [--events N])

Runs gunicorn and one Celery worker as the Procfile starts them, on PostgreSQL + Redis, in a
scratch database (<DATABASE_URL's name>_bench_ingest, recreated each run). Several client
connections post the events in requests of 1,000; the clock stops when the last batch is
done. In the same run and database it times a plain COPY of the same rows into a scratch
table without indexes (median of three copies): the physical limit of the machine. The last
line is exactly

    ingest events_per_s=<n> copy_rows_per_s=<m> ratio=<n/m> worker_rss_mb=<peak> web_rss_mb=<peak>

where the RSS figures are the peak of the largest single process of each group (the sum over
the group is printed on the line before). Not part of `make test`.
"""

from __future__ import annotations

import argparse
import http.client
import io
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

KINDS = ["impression"] * 12 + ["click"] * 5 + ["conversion"] * 2 + ["bad_recommendation"]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- Environment ---


def bench_urls() -> tuple[str, str]:
    base = os.environ.get("DATABASE_URL", "")
    if not base.startswith(("postgres://", "postgresql://")):
        base = "postgres://postgres@127.0.0.1:5432/modelops"
    parts = urlsplit(base)
    name = parts.path.lstrip("/") or "modelops"
    db_url = os.environ.get("BENCH_DATABASE_URL") or urlunsplit(
        parts._replace(path=f"/{name}_bench_ingest")
    )
    redis_url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    return db_url, redis_url


def recreate_database(db_url: str) -> None:
    import psycopg

    parts = urlsplit(db_url)
    name = parts.path.lstrip("/")
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def server_env(db_url: str, redis_url: str, port: int) -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ.get('PATH', '')}",
        "DATABASE_URL": db_url,
        "REDIS_URL": redis_url,
        "DEBUG": "0",
        "SECRET_KEY": "bench-only-" + "x" * 50,
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SECURE_SSL_REDIRECT": "0",
        # the bench measures throughput, not the per-client rate limit
        "INGEST_THROTTLE_RATE": "1000000/min",
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "LOG_LEVEL": "WARNING",
        "DJANGO_SETTINGS_MODULE": "dashboard.settings",
    }


def procfile_command(name: str) -> str:
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return line.split(":", 1)[1].strip()
    raise SystemExit(f"Procfile has no {name!r} process")


def start(name: str, env: dict[str, str]) -> subprocess.Popen:
    command = procfile_command(name)
    if name == "worker":
        command = re.sub(r"-l \w+", "-l warning", command)
    log(f"starting {name}: {command}")
    return subprocess.Popen(
        ["bash", "-c", f"exec {command}"],
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=open(ROOT / "var" / f"bench-{name}.log", "w"),  # noqa: SIM115
    )


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def wait_until_serving(port: int) -> None:
    """Return once gunicorn answers /livez on `port` (about 20 s at most)."""
    for _ in range(100):
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/livez")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("gunicorn did not come up (see var/bench-web.log)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- Memory and CPU (one sampler: it must not load the machine it measures) ---


def _stat(pid: int | str) -> tuple[str, int, float] | None:
    """(command name, parent pid, CPU seconds used so far) of a live process, else None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            head, tail = f.read().rsplit(")", 1)
        fields = tail.split()
        return head.split("(", 1)[1], int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICK
    except (OSError, IndexError, ValueError):
        return None


_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    found = _stat(pid)
    return found[2] if found else 0.0


def cpu_per_process() -> dict[int, tuple[str, int, float]]:
    """{pid: (command name, parent pid, CPU seconds used so far)} for every live process."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(entry)) is not None:
            found[int(entry)] = stat
    return found


def _tree(root: int, processes: dict[int, tuple[str, int, float]]) -> list[int]:
    found, frontier = [root], [root]
    while frontier:
        pid = frontier.pop()
        kids = [p for p, (_, parent, _) in processes.items() if parent == pid]
        found += kids
        frontier += kids
    return found


def machine_busy_s() -> float:
    """CPU seconds all processes of the machine have used (from /proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / _TICK


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Sampler(threading.Thread):
    """While the clock runs: peak RSS of the largest process, and of the sum, of each group
    (web, worker), their CPU, and the CPU of every process of the machine by command name.

    The groups' few processes are read every 0.25 s; the whole of /proc (a few hundred
    files) once a second, which finds the groups' children and the processes born during
    the run (a connection's PostgreSQL backend counts for what it used while seen, from
    zero). Two samplers scanning /proc 13 times a second used to cost the client ~0.5
    CPU-seconds per run, CPU the system under test was then short of.
    """

    def __init__(self, groups: dict[str, int]) -> None:
        super().__init__(daemon=True)
        self.groups = groups
        self.peak_one = dict.fromkeys(groups, 0)
        self.peak_sum = dict.fromkeys(groups, 0)
        self.cpu: dict[str, dict[int, float]] = {name: {} for name in groups}
        self.cpu_base: dict[int, float] = {}  # CPU a group's process spent before (imports)
        self.start_values: dict[int, float] = {}
        self.last: dict[int, tuple[str, float]] = {}
        self.members: dict[str, list[int]] = {name: [root] for name, root in groups.items()}
        self.done = threading.Event()

    def begin(self) -> None:
        """Start counting CPU by command from now (the sampler itself may run earlier)."""
        self.start_values = {pid: used for pid, (_, _, used) in cpu_per_process().items()}
        self.last = {}

    def scan(self) -> None:
        processes = cpu_per_process()
        self.last.update({pid: (name, used) for pid, (name, _, used) in processes.items()})
        self.members = {name: _tree(root, processes) for name, root in self.groups.items()}

    def run(self) -> None:
        next_scan = 0.0
        while not self.done.is_set():
            if time.monotonic() >= next_scan:
                self.scan()
                next_scan = time.monotonic() + 1.0
            for name, pids in self.members.items():
                sizes = [_rss_kb(p) for p in pids]
                for p in pids:
                    used = _cpu_s(p)
                    self.cpu_base.setdefault(p, used)
                    self.cpu[name][p] = used - self.cpu_base[p]
                self.peak_one[name] = max(self.peak_one[name], max(sizes, default=0))
                self.peak_sum[name] = max(self.peak_sum[name], sum(sizes))
            self.done.wait(0.25)

    def by_command(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for pid, (name, used) in self.last.items():
            out[name] = out.get(name, 0.0) + used - self.start_values.get(pid, 0.0)
        return out


# --- Data ---


def make_bodies(n_events: int, per_request: int, app: str) -> list[bytes]:
    import orjson

    rng = random.Random(7)
    now = datetime.now(UTC)
    bodies = []
    for start in range(0, n_events, per_request):
        events = []
        for i in range(start, min(start + per_request, n_events)):
            kind = KINDS[rng.randrange(len(KINDS))]
            events.append(
                {
                    "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                    "occurred_at": (now - timedelta(seconds=rng.randrange(6 * 3600))).isoformat(),
                    "application": app,
                    "kind": kind,
                    "value": round(rng.random() * 10, 3) if kind == "conversion" else None,
                    "request_id": f"req-{i}",
                    "segment": rng.choice(["web", "ios", "android"]),
                }
            )
        bodies.append(orjson.dumps(events))
    return bodies


def setup_fleet() -> tuple[str, str, int, int]:
    """An application served by one version, and a product user's feedback token."""
    from django.utils import timezone

    from registry.models import ApiToken
    from registry.roles import Actor
    from registry.services import create_api_token
    from tests.factories.registry import (
        ApplicationFactory,
        TrafficAllocationFactory,
        UserFactory,
    )

    alloc = TrafficAllocationFactory(
        deployment__application=ApplicationFactory(slug="bench-recs"),
        valid_from=timezone.now() - timedelta(days=2),
    )
    user = UserFactory(username="bench-pipeline", roles=["product"])
    _, raw = create_api_token(
        actor=Actor.system("bench"),
        user=user,
        name="bench",
        scopes=[ApiToken.Scope.FEEDBACK_WRITE, ApiToken.Scope.READ],
    )
    return "bench-recs", raw, alloc.deployment.application_id, alloc.model_version_id


# --- Phases ---


def post_all(port: int, token: str, bodies: list[bytes], clients: int) -> list[str]:
    """Post every body over `clients` keep-alive connections; return failure messages."""
    failures: list[str] = []
    lock = threading.Lock()
    cursor = iter(range(len(bodies)))
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while True:
            with lock:
                i = next(cursor, None)
            if i is None:
                break
            for _attempt in range(5):
                try:
                    conn.request("POST", "/api/v1/feedback/", body=bodies[i], headers=headers)
                    response = conn.getresponse()
                    payload = response.read()
                except (OSError, http.client.HTTPException) as exc:
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                    last = f"request {i}: {exc!r}"
                    continue
                if response.status == 202:
                    break
                last = f"request {i}: HTTP {response.status} {payload[:200]!r}"
                if response.status != 429:
                    break
                time.sleep(1)
            else:
                with lock:
                    failures.append(last)
                continue
            if response.status != 202:
                with lock:
                    failures.append(last)
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return failures


def wait_for_batches(db_url: str, expected: int, timeout: float) -> tuple[int, int]:
    import psycopg

    deadline = time.monotonic() + timeout
    with psycopg.connect(db_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            finished, accepted = conn.execute(
                "SELECT count(*) FILTER (WHERE state IN ('done', 'failed')), "
                "coalesce(sum(accepted), 0) FROM feedback_ingestbatch"
            ).fetchone()
            if finished >= expected:
                return finished, accepted
            time.sleep(0.1)
    raise SystemExit(f"timed out: {finished}/{expected} batches finished")


COPY_RUNS = 3  # one COPY of 1,000,000 rows lasts ~3 s and varies by a third between runs


def checkpoint(db_url: str) -> None:
    """Write out every dirty buffer before a timed phase, so that neither the ingest run nor
    a COPY pays for the WAL and buffers an earlier phase left behind (a checkpoint falling
    inside one COPY made single copies vary from 200k to 460k rows/s)."""
    import psycopg

    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")


def copy_rate(db_url: str, bodies: list[bytes], app_id: int, mv_id: int) -> float:
    """Rows per second of a plain COPY of the same rows into a scratch table (no indexes):
    the median of COPY_RUNS copies."""
    import orjson
    import psycopg

    now = datetime.now(UTC).isoformat()
    buffer = io.StringIO()
    n = 0
    for body in bodies:
        for e in orjson.loads(body):
            value = "\\N" if e["value"] is None else repr(e["value"])
            buffer.write(
                f"{e['event_id']}\t{e['occurred_at']}\t{now}\t{app_id}\t{mv_id}\t{e['kind']}\t"
                f"{value}\t\\N\t\\N\t\\N\t{e['request_id']}\t{e['segment']}\t\\N\t1\n"
            )
            n += 1
    data = buffer.getvalue().encode()
    columns = (
        "event_id, occurred_at, received_at, application_id, model_version_id, kind, value, "
        "prediction, label, correct, request_id, segment, payload, batch_id"
    )
    rates = []
    with psycopg.connect(db_url) as conn:
        for _ in range(COPY_RUNS):
            conn.execute("DROP TABLE IF EXISTS bench_copy_scratch")
            conn.execute("CREATE TABLE bench_copy_scratch (LIKE feedback_feedbackevent)")
            conn.commit()
            checkpoint(db_url)
            started = time.perf_counter()
            with (
                conn.cursor() as cur,
                cur.copy(f"COPY bench_copy_scratch ({columns}) FROM STDIN") as cp,
            ):
                for i in range(0, len(data), 1 << 20):
                    cp.write(data[i : i + (1 << 20)])
            conn.commit()
            rates.append(n / (time.perf_counter() - started))
            conn.execute("DROP TABLE bench_copy_scratch")
            conn.commit()
    log("COPY rows/s: " + ", ".join(f"{r:,.0f}" for r in rates) + " (the median counts)")
    return statistics.median(rates)


# --- CPU per batch, in-process (load-independent; `--profile`) ---


def profile_cpu(n_batches: int, per_request: int, hot: str) -> None:
    """CPU seconds (time.process_time) and SQL queries per batch, web and worker side, run
    in this process against the scratch database: independent of other load on the machine.

    The web side posts through Django's test client (auth, throttle, one insert, enqueue to
    Redis); the worker side calls the service the Celery task calls (one task: every batch,
    a group at a time). `hot=web|worker` prints
    a cProfile of that side's top functions.
    """
    import cProfile
    import pstats

    from django.db import connection, reset_queries
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from feedback import services
    from feedback.models import IngestBatch

    app, token, _, _ = setup_fleet()
    bodies = make_bodies(n_batches * per_request, per_request, app)
    client = Client(HTTP_AUTHORIZATION=f"Bearer {token}", HTTP_HOST="127.0.0.1")
    post = lambda body: client.post(  # noqa: E731
        "/api/v1/feedback/", data=body, content_type="application/json"
    )
    post(bodies[0])  # warm-up: imports, first connection
    with connection.cursor() as cursor:  # this process's PostgreSQL backend, when local
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]
    pg_start = _cpu_s(backend)
    ids = []
    profiler = cProfile.Profile(time.process_time)
    web_queries = 0
    started = time.process_time()
    for body in bodies[1:]:
        with CaptureQueriesContext(connection) as ctx:
            if hot == "web":
                profiler.enable()
            response = post(body)
            if hot == "web":
                profiler.disable()
        web_queries += len(ctx.captured_queries)
        web_ctx = ctx
        assert response.status_code == 202, response.content[:300]
        ids.append(response.json()["id"])
    web_cpu = time.process_time() - started
    pg_web = _cpu_s(backend) - pg_start
    n = len(ids)
    first = IngestBatch.objects.order_by("id").values_list("id", flat=True).first()
    worker_queries = 0
    services.ingest_feedback_batch(batch_id=first)  # warm-up
    pg_start = _cpu_s(backend)
    started = time.process_time()
    with CaptureQueriesContext(connection) as ctx:  # what one worker task does with them all
        if hot == "worker":
            profiler.enable()
        services.drain_open_batches(budget_s=3600)
        if hot == "worker":
            profiler.disable()
    worker_queries += len(ctx.captured_queries)
    worker_cpu = time.process_time() - started
    pg_worker = _cpu_s(backend) - pg_start
    if os.environ.get("PROFILE_SQL"):
        print("web:", *(q["sql"][:150] for q in web_ctx.captured_queries), sep="\n  ")
        print("worker:", *(q["sql"][:150] for q in ctx.captured_queries), sep="\n  ")
    reset_queries()
    done = IngestBatch.objects.filter(state="done").count()
    if hot:
        stats = pstats.Stats(profiler).sort_stats(os.environ.get("PROFILE_SORT", "cumulative"))
        stats.print_stats(45)
        if os.environ.get("PROFILE_CALLERS"):
            stats.print_callers(os.environ["PROFILE_CALLERS"])
    print(
        f"profile batches={n} events_per_batch={per_request} done={done} "
        f"web_cpu_ms_per_batch={web_cpu / n * 1000:.1f} "
        f"web_queries_per_batch={web_queries / n:.1f} "
        f"worker_cpu_ms_per_batch={worker_cpu / n * 1000:.1f} "
        f"worker_queries_per_batch={worker_queries / n:.1f} "
        f"postgres_cpu_ms_per_batch: web={pg_web / n * 1000:.1f} worker={pg_worker / n * 1000:.1f}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--per-request", type=int, default=1_000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument(
        "--profile",
        type=int,
        metavar="BATCHES",
        help="instead: CPU ms and SQL queries per batch, in-process (load-independent)",
    )
    parser.add_argument("--hot", choices=["web", "worker"], help="with --profile: cProfile it")
    args = parser.parse_args()

    db_url, redis_url = bench_urls()
    log(f"scratch database {urlsplit(db_url).path.lstrip('/')}, broker {redis_url}")
    recreate_database(db_url)
    port = free_port()
    env = server_env(db_url, redis_url, port)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"], cwd=ROOT, env=env,
        check=True,
    )  # fmt: skip
    os.environ.update({k: env[k] for k in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")})
    if args.profile:  # the servers' settings (DEBUG off, no throttle limit) in this process
        os.environ.update(env)
    import django

    django.setup()
    import redis

    for queue in ("ingest",):  # a leftover message would only claim a done batch; start clean
        redis.Redis.from_url(redis_url).delete(queue)
    if args.profile:
        profile_cpu(args.profile, args.per_request, args.hot or "")
        return
    app, token, app_id, mv_id = setup_fleet()
    from django.db import connections

    connections.close_all()

    log(f"generating {args.events:,} events in requests of {args.per_request:,}")
    bodies = make_bodies(args.events, args.per_request, app)
    web, worker = start("web", env), start("worker", env)
    sampler = Sampler({"worker": worker.pid, "web": web.pid})
    try:
        wait_until_serving(port)
        time.sleep(2)  # let the worker connect to the broker
        sampler.start()
        checkpoint(db_url)
        log(f"posting with {args.clients} client connections")
        busy, client_cpu = machine_busy_s(), time.process_time()
        sampler.begin()
        started = time.perf_counter()
        failures = post_all(port, token, bodies, args.clients)
        posted = time.perf_counter() - started
        if failures:
            raise SystemExit(f"{len(failures)} requests failed, e.g. {failures[:3]}")
        log(f"all {len(bodies)} requests accepted in {posted:.1f} s; waiting for the worker")
        finished, accepted = wait_for_batches(db_url, len(bodies), timeout=1800)
        elapsed = time.perf_counter() - started
        busy = machine_busy_s() - busy
        client_cpu = time.process_time() - client_cpu  # posting, polling and the sampler
        sampler.scan()
    finally:
        sampler.done.set()
        stop(web)
        stop(worker)
    if accepted != args.events:
        raise SystemExit(f"accepted {accepted} events, expected {args.events}")
    events_per_s = args.events / elapsed
    log(f"ingest: {args.events:,} events in {elapsed:.1f} s (requests done after {posted:.1f} s)")
    log("timing the raw COPY baseline")
    copy_per_s = copy_rate(db_url, bodies, app_id, mv_id)
    mb = 1024
    cpu = {name: sum(per_pid.values()) for name, per_pid in sampler.cpu.items()}
    log(
        f"cpu seconds: web {cpu['web']:.1f}, worker {cpu['worker']:.1f}, this client "
        f"{client_cpu:.1f}; whole machine "
        f"{busy:.1f} of {elapsed * (os.cpu_count() or 1):.1f} available (postgres, client and "
        "anything else running count there)"
    )
    per_command = sampler.by_command()
    top = sorted(per_command.items(), key=lambda item: -item[1])[:8]
    log(
        f"cpu seconds by command ({sum(per_command.values()):.1f} seen): "
        + ", ".join(f"{name} {used:.1f}" for name, used in top)
    )
    sums = sampler.peak_sum
    print(f"rss_sum worker_mb={sums['worker'] // mb} web_mb={sums['web'] // mb}")
    print(
        f"ingest events_per_s={events_per_s:.0f} copy_rows_per_s={copy_per_s:.0f} "
        f"ratio={events_per_s / copy_per_s:.2f} worker_rss_mb={sampler.peak_one['worker'] // mb} "
        f"web_rss_mb={sampler.peak_one['web'] // mb}",
        flush=True,
    )


if __name__ == "__main__":
    main()
