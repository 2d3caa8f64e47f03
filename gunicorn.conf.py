"""gunicorn settings for production; gunicorn reads ./gunicorn.conf.py on its own.

Everything can be overridden from the environment (or on the command line, which wins):
PORT / HOST, WEB_CONCURRENCY (workers), WEB_THREADS, WEB_TIMEOUT, FORWARDED_ALLOW_IPS.
"""

import os

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
# Sync workers with a few threads each: requests are short DB reads and writes.
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("WEB_THREADS", "4"))
timeout = int(os.environ.get("WEB_TIMEOUT", "30"))
graceful_timeout = 20
keepalive = 5
# Recycle workers now and then so a slow leak never takes the site down.
max_requests = 2000
max_requests_jitter = 200
# Load the application once in the master and fork the workers from it (dashboard/wsgi.py
# loads the URLconf too): a new or recycled worker serves at once instead of importing the
# views during its first requests, and the workers share the loaded code's memory pages.
# A code change therefore needs a restart, not a HUP.
preload_app = True
# The worker heartbeat file in RAM: a slow or full disk must not look like a hung worker.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108
# Only trust X-Forwarded-* from the reverse proxy in front (comma list; "*" behind a LB).
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
# Access log as one JSON object per line, with the request id the app set on the response.
accesslog = "-"
access_log_format = (
    '{"ts":"%(t)s","logger":"gunicorn.access","request_id":"%({x-request-id}o)s",'
    '"method":"%(m)s","path":"%(U)s","query":"%(q)s","status":%(s)s,"bytes":"%(B)s",'
    '"duration_ms":%(M)s,"remote":"%(h)s","user_agent":"%(a)s"}'
)
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
proc_name = "modelops-web"


def child_exit(server, worker):  # noqa: ARG001 - gunicorn's hook signature
    """/metrics reads the database, so no per-process files exist, unless an operator adds
    prometheus_client multiprocess metrics with PROMETHEUS_MULTIPROC_DIR: then a dead worker's
    files must be marked so its gauges disappear."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def pre_fork(server, worker):  # noqa: ARG001 - gunicorn's hook signature
    """The application is loaded (preload_app): freeze its objects before forking, as
    Python's gc.freeze documentation advises, so that the workers' collections neither walk
    them nor write to their pages (which would unshare them)."""
    import gc

    gc.freeze()


def post_worker_init(worker):  # noqa: ARG001 - gunicorn's hook signature
    """Django is loaded: move its objects out of the cycle collector's sight (gc.freeze), so
    collections triggered by a request's garbage stop walking the whole application
    (tests/bench/bench_ingest.py --profile: 0.2-0.4 ms less CPU per ingest request)."""
    import gc

    gc.freeze()
