"""One settings module, driven by the environment; every variable is documented in README.md.

With nothing set it runs on SQLite under var/ and an embedded Celery broker (kombu's
filesystem transport), so `make run` works on a bare machine. Production sets DEBUG=0,
SECRET_KEY, ALLOWED_HOSTS, DATABASE_URL and REDIS_URL.
"""

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
import plotly
from csp.constants import NONCE
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name, "1" if default else "0").lower()
    if raw not in {"1", "0", "true", "false", "yes", "no"}:
        raise ImproperlyConfigured(f"{name} must be 1/0/true/false, got {raw!r}")
    return raw in {"1", "true", "yes"}


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, str(default))
    try:
        return int(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from exc


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("DEBUG", default=True)
SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off")
    SECRET_KEY = "dev-only-insecure-key-never-use-in-production-0123456789abcdef"  # noqa: S105
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost" if DEBUG else "")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.humanize",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "registry",
    "feedback",
    "dashboard",
]

MIDDLEWARE = [
    "dashboard.logging.RequestIdMiddleware",  # first: every later log line carries the id
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "dashboard.urls"
WSGI_APPLICATION = "dashboard.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
        conn_max_age=env_int("DB_CONN_MAX_AGE", 60),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # web, worker, beat and the simulator share the file. WAL lets readers run beside the one
    # writer, and IMMEDIATE transactions take the write lock up front, so a writer waits out
    # `timeout` instead of failing with "database is locked" when it upgrades a read lock.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    DATABASES["default"]["CONN_MAX_AGE"] = 0
else:
    # an unreachable database fails /readyz (and requests) within seconds instead of hanging
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
        "connect_timeout", env_int("DB_CONNECT_TIMEOUT_S", 3)
    )
    # Statements sent with server-side binding are prepared at their first execution: only
    # the ingest path's own cursors (feedback.services.ingest._bound_cursor) bind that way;
    # Django's cursors bind client-side and never prepare. Behind a pooler in transaction mode
    # this needs its prepared-statement support (PgBouncer >= 1.21, max_prepared_statements).
    DATABASES["default"]["OPTIONS"].setdefault("prepare_threshold", 0)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = os.environ.get("REDIS_URL", "")
CACHES = {
    "default": (
        # Django's RedisCache with one redis client per pool (registry.shared_cache says why)
        {"BACKEND": "registry.shared_cache.SharedRedisCache", "LOCATION": REDIS_URL}
        if REDIS_URL
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    ),
    # status bodies, generations and remembered API tokens (registry.status_generation):
    # shared by every process, so a write in a Celery worker or the admin reaches every web
    # worker at once; never locmem
    "shared": (
        {"BACKEND": "registry.shared_cache.SharedRedisCache", "LOCATION": REDIS_URL}
        if REDIS_URL
        else {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(VAR_DIR / "shared-cache"),
            "OPTIONS": {"MAX_ENTRIES": 5000},
        }
    ),
}
# Longest life of a cached status body (s); 0 turns the status cache off. Bodies are dropped
# at once on any change; this only bounds the harm of a lost invalidation (store outage).
STATUS_CACHE_MAX_AGE_S = env_int("STATUS_CACHE_MAX_AGE_S", 300)
# Longest life of a remembered API token (s; 0 = off). Revocation applies at once anyway.
API_TOKEN_CACHE_S = env_int("API_TOKEN_CACHE_S", 300)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard:home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "staticfiles"
STATICFILES_DIRS = [
    BASE_DIR / "static",
    # plotly.min.js ships inside the plotly wheel: served from here, never from a CDN
    ("plotly", Path(plotly.__file__).parent / "package_data"),
]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}
MEDIA_ROOT = VAR_DIR / "media"

# --- Security (production: DEBUG=0) ---
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False  # htmx reads the token from the page, not the cookie
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if not DEBUG:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", default=True)
    SECURE_REDIRECT_EXEMPT = [r"^livez$", r"^readyz$", r"^metrics$"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True

# --- REST API ---
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "registry.auth.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["registry.permissions.ReadScope"],
    "DEFAULT_FILTER_BACKENDS": [
        # django-filter, plus a 400 for typed params given empty or a boolean given "null"
        "registry.api.filters.StrictFilterBackend",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_PAGINATION_CLASS": "registry.api.pagination.Pagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "registry.api.errors.exception_handler",
    "DEFAULT_THROTTLE_RATES": {
        "ingest": os.environ.get("INGEST_THROTTLE_RATE", "600/min"),
    },
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Model operations dashboard API",
    "DESCRIPTION": "Which model versions serve which applications; rollouts, replicas, feedback.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "APPEND_COMPONENTS": {"securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}}},
    "SECURITY": [{"bearerAuth": []}],
    # Two choice sets share the field name "format": name each enum (else drf_spectacular.W001,
    # which fails `make check-deploy`).
    "ENUM_NAME_OVERRIDES": {
        "ModelFormatEnum": "registry.models.ModelVersion.Format",
        "IngestFormatEnum": "feedback.models.IngestBatch.Format",
        # one name per choice set shared across apps (else W001 fails `make check-deploy`);
        # identical sets share one name: low..critical (criticality, report severity) and
        # firing / resolved (alert state, notification event)
        "CriticalityEnum": "registry.models.Application.Criticality",
        "RolloutStateEnum": "registry.models.Rollout.State",
        "IngestBatchStateEnum": "feedback.models.IngestBatch.State",
        "ReportStateEnum": "feedback.models.FeedbackReport.State",
        "AlertMetricEnum": "feedback.models.AlertRule.Metric",
        "AlertSeverityEnum": "feedback.models.AlertRule.Severity",
        "AlertStateEnum": "feedback.models.Alert.State",
        # pending / delivered / failed: alert notifications and webhook deliveries alike
        "DeliveryStateEnum": "feedback.models.Notification.State",
    },
}

# --- Celery ---
CELERY_BROKER_URL = REDIS_URL or "filesystem://"
if not REDIS_URL:
    # Embedded broker: the worker and beat are still separate processes sharing folders.
    _broker_dir = VAR_DIR / "broker"
    for _sub in ("queue", "processed", "control"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "store_processed": False,
        # fanout/pidbox exchanges; kombu defaults to a "control" folder in the cwd
        "control_folder": str(_broker_dir / "control"),
    }
else:
    # At-least-once on Redis, as measured in RECIPES.md: a killed worker's task comes back
    # after about visibility_timeout + 5 s instead of an hour.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 120),
        "unacked_restore_throttle": 1,
        "unacked_restore_interval": 5,
    }
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
_vt = env_int("CELERY_VISIBILITY_TIMEOUT", 120)
# below the visibility timeout, and still positive when tests set a short one
CELERY_TASK_TIME_LIMIT = max(_vt - 20, _vt // 2)
CELERY_TASK_IGNORE_RESULT = True
# Celery's Django fixup closes every database connection before and after each task unless
# this is set: a new PostgreSQL connection (backend start-up, catalog caches) per task cost
# more than a 1,000-event ingest batch itself. dashboard/celery.py applies Django's own rule
# around tasks instead (close when broken or older than CONN_MAX_AGE), as around requests.
CELERY_DB_REUSE_MAX = 1000
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {
    "feedback.tasks.ingest_*": {"queue": "ingest"},
    "registry.tasks.probe_*": {"queue": "probes"},
}
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
# Every periodic job, in one place (STYLE R15). Each entry expires just below its interval,
# so a beat tick that no worker picked up in time is dropped rather than piling up.


def _every(seconds: float, task: str, *, expires: int) -> dict:
    if expires >= seconds:
        raise ImproperlyConfigured(f"{task} must expire before its next run")
    return {"task": task, "schedule": seconds, "options": {"expires": expires}}


CELERY_BEAT_SCHEDULE: dict[str, dict] = {
    # Replica probes: a dispatcher every minute enqueues one probe per deployment that is due
    "probe-due-deployments": _every(60.0, "registry.tasks.probe_due_deployments_task", expires=55),
    # Feedback: re-send batches whose message was lost; drop raw events past retention
    "requeue-stale-ingest-batches": _every(
        60.0, "feedback.tasks.requeue_stale_batches_task", expires=55
    ),
    "purge-old-feedback-events": _every(
        3600.0, "feedback.tasks.purge_old_feedback_events_task", expires=3500
    ),
    "poll-due-feedback-sources": _every(
        30.0, "feedback.tasks.poll_due_feedback_sources_task", expires=25
    ),
    # Rollouts: advance healthy gradual rollouts, pause / roll back on guardrail failure or SRM
    "evaluate-rollouts": _every(300.0, "feedback.alert_tasks.evaluate_rollouts_task", expires=280),
    # Alerts: evaluate every rule each minute; re-send notifications whose retry is due
    "evaluate-alert-rules": _every(
        60.0, "feedback.alert_tasks.evaluate_alert_rules_task", expires=55
    ),
    "retry-due-notifications": _every(
        30.0, "feedback.alert_tasks.retry_due_notifications_task", expires=25
    ),
    # Outbound webhooks: re-send deliveries whose retry is due and whose message was lost
    "retry-due-webhooks": _every(30.0, "dashboard.tasks.retry_due_webhooks_task", expires=25),
}

# --- Domain ---
API_TOKEN_DEFAULT_TTL = timedelta(days=env_int("API_TOKEN_TTL_DAYS", 90))
PROTECTED_ALIASES = env_list("PROTECTED_ALIASES", "champion,production")
DEFAULT_HEARTBEAT_TIMEOUT = timedelta(seconds=env_int("HEARTBEAT_TIMEOUT_S", 120))
FEEDBACK_RETENTION_DAYS = env_int("FEEDBACK_RETENTION_DAYS", 30)
FEEDBACK_REQUEUE_AFTER_S = env_int("FEEDBACK_REQUEUE_AFTER_S", 120)
# Golden-input probes of replicas (registry/probes.py documents the replica-side contract)
DEFAULT_PROBE_INTERVAL = timedelta(seconds=env_int("PROBE_INTERVAL_S", 300))
REPLICA_PROBE_PATH = os.environ.get("REPLICA_PROBE_PATH", "/predict")
REPLICA_PROBE_TIMEOUT_S = float(env_int("REPLICA_PROBE_TIMEOUT_MS", 5000)) / 1000
REPLICA_PROBE_CONCURRENCY = env_int("REPLICA_PROBE_CONCURRENCY", 8)
REPLICA_PROBE_RETENTION = timedelta(days=env_int("PROBE_RETENTION_DAYS", 14))
# A whole probe run must end well inside the task's hard time limit
REPLICA_PROBE_BUDGET_S = float(
    env_int("REPLICA_PROBE_BUDGET_S", max(10, min(60, CELERY_TASK_TIME_LIMIT - 30)))
)
# Alert e-mail: SMTP when EMAIL_HOST is set, else printed to the console (dev)
EMAIL_HOST = os.environ.get("EMAIL_HOST", "")
EMAIL_PORT = env_int("EMAIL_PORT", 587)
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", default=True)
EMAIL_TIMEOUT = 10
EMAIL_BACKEND = (
    "django.core.mail.backends.smtp.EmailBackend"
    if EMAIL_HOST
    else "django.core.mail.backends.console.EmailBackend"
)
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "modelops@localhost")

# Structured logs: one JSON object per line (LOG_FORMAT=json, the default when DEBUG is off)
# with the request id of the HTTP request, or of the request that enqueued a Celery task.
LOG_FORMAT = os.environ.get("LOG_FORMAT", "text" if DEBUG else "json")
if LOG_FORMAT not in {"json", "text"}:
    raise ImproperlyConfigured(f"LOG_FORMAT must be json or text, got {LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "dashboard.logging.RequestIdFilter"}},
    "formatters": {
        "json": {"()": "dashboard.logging.JsonFormatter"},
        "text": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["request_id"],
        }
    },
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "INFO"}},
}
# Workers log through the handler above (JSON in production) instead of Celery's own format
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# --- Operations (issue 7) ---
# /metrics: readable with a bearer token (scope read) or from these addresses / networks
METRICS_ALLOWED_IPS = env_list("METRICS_ALLOWED_IPS", "127.0.0.1,::1")
METRICS_CACHE_S = env_int("METRICS_CACHE_S", 10)  # workers share one rendering per interval
# Content-Security-Policy (django-csp 4): scripts only from here or with the page's nonce.
# Styles: plotly.js (and the Swagger UI page) inject <style> elements at run time, so
# style-src-elem allows inline ones (tests/ops/test_csp_browser.py saw violations without);
# style="..." attributes in markup stay forbidden (JS may still set element.style).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'", NONCE],
        "style-src": ["'self'"],
        "style-src-elem": ["'self'", "'unsafe-inline'"],
        "style-src-attr": ["'none'"],
        "img-src": ["'self'", "data:", "blob:"],
        "font-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "worker-src": ["'self'", "blob:"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}
