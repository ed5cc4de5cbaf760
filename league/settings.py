"""League Manager settings: the one place that reads the environment.

Every setting comes from an environment variable (12-factor) through django-environ.
With nothing set, the project runs on embedded parts: a SQLite file, a Celery broker on
the local filesystem, and for AWS real AWS (``runstack`` starts moto and points its
children at it). Docs: https://docs.djangoproject.com/en/5.2/ref/settings/
"""

from __future__ import annotations

import ipaddress
import os
import sys
import tempfile
from datetime import date, timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


class _SecretFiles(environ.FileAwareMapping):
    """os.environ where ``<NAME>_FILE`` names a file holding NAME's value (a secret mounted
    under /run/secrets); one final newline, as ``echo`` writes, is not part of the value."""

    def __getitem__(self, key: str) -> str:
        value = super().__getitem__(key)
        return value[:-1] if value.endswith("\n") and self.env.get(key + "_FILE") else value


class _Env(environ.Env):
    ENVIRON = _SecretFiles()


#: Any variable below may instead name a file holding its value: `<NAME>_FILE` (e.g. `SECRET_KEY_FILE=/run/secrets/secret_key`, a swarm or Kubernetes secret); the file's content is the value, one final newline dropped. The file wins when both are set.
env = _Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False) if (BASE_DIR / ".env").exists() else None

# --------------------------------------------------------------------------------------
# Runtime data (SQLite file, filesystem broker, beat schedule) for the embedded defaults.
# --------------------------------------------------------------------------------------
#: Where the embedded defaults keep their files: the SQLite database, the filesystem broker, beat's schedule, runstack's admin password.
DATA_DIR = Path(env.str("DATA_DIR", default=str(BASE_DIR / ".data")))
DATA_DIR.mkdir(parents=True, exist_ok=True)

# --------------------------------------------------------------------------------------
# Core. Production (DEBUG off) refuses to start without SECRET_KEY and ALLOWED_HOSTS.
# --------------------------------------------------------------------------------------
#: Development mode. Off (production), SECRET_KEY and ALLOWED_HOSTS are required and HTTPS is enforced.
DEBUG = env.bool("DEBUG", default=True)
#: Test mode (set by itself under pytest): a fast password hasher.
TESTING = "pytest" in sys.modules or env.bool("TESTING", default=False)

if DEBUG:
    # `or`: a .env copied from .env.example before it is filled in has SECRET_KEY empty. Unset:
    # a key of this data directory's own (league/secretkey.py); the fixed key only under tests.
    from league.secretkey import TEST_KEY, data_dir_key

    #: Django's signing key (sessions, tokens). Required with DEBUG off; with DEBUG on, unset means the data directory's own key (DATA_DIR/secret-key).
    SECRET_KEY = env.str("SECRET_KEY", default="") or (TEST_KEY if TESTING else data_dir_key(DATA_DIR))
    #: Host names this server answers for (comma-separated). Required with DEBUG off.
    ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["*"])
else:
    SECRET_KEY = env.str("SECRET_KEY", default="")
    ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=[])
    if not SECRET_KEY:
        raise ImproperlyConfigured("SECRET_KEY is not set. With DEBUG off, set SECRET_KEY to a long random string.")
    if not ALLOWED_HOSTS:
        raise ImproperlyConfigured(
            "ALLOWED_HOSTS is not set. With DEBUG off, set ALLOWED_HOSTS to the host names served."
        )
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    #: With DEBUG off: redirect plain HTTP to HTTPS (turn off behind a proxy that terminates TLS and checks it).
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    #: With DEBUG off: the Strict-Transport-Security max-age.
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True

#: Origins trusted for unsafe requests with a session (e.g. https://league.example.org), comma-separated.
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# --------------------------------------------------------------------------------------
# Service selection: the same code runs as a monolith ("all"), as one service, or as a
# list of them ("teams,fixtures": a monolith that one service has left, see split_service).
# --------------------------------------------------------------------------------------
SERVICES = ("teams", "transfers", "fixtures")
#: Which services this process runs: `all` (the monolith), one of `teams`, `transfers`, `fixtures`, or a list (`teams,fixtures`).
_league_service = env.str("LEAGUE_SERVICE", default="all").strip() or "all"
_chosen = [s.strip() for s in _league_service.split(",") if s.strip()]
if _league_service != "all" and (not _chosen or set(_chosen) - set(SERVICES)):
    raise ImproperlyConfigured(
        f"LEAGUE_SERVICE={_league_service!r} is not known. Use all, or one or more of "
        f"{', '.join(SERVICES)} separated by commas (e.g. teams,fixtures)."
    )
# In the services' own order, each once; all three is the monolith.
ACTIVE_SERVICES = SERVICES if _league_service == "all" else tuple(s for s in SERVICES if s in _chosen)
LEAGUE_SERVICE = "all" if ACTIVE_SERVICES == SERVICES else ",".join(ACTIVE_SERVICES)

INSTALLED_APPS = [
    # Django's admin with the event-bus page added (league/admin_site.py).
    "league.admin_site.LeagueAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "events",
    # Idempotency-Key on the API's POSTs, kept in each deployment's own database.
    "idempotency",
    # The project itself: `manage.py runstack` starts the whole system.
    "league",
    # Moving a service out of the running monolith: `manage.py split_service`.
    "cutover",
    *ACTIVE_SERVICES,
    # The league page at / and its live feed (live/views.py, live/feed.py).
    "live",
]

MIDDLEWARE = [
    # First, so that every log line and event of the request carries its X-Request-ID.
    "league.middleware.RequestIdMiddleware",
    # Under /api/: both spellings of a route, bounded bodies, every error a problem document.
    "league.middleware.ApiMiddleware",
    # A write refused because its service is being moved (events/gate.py): 503, not 500.
    "league.middleware.WritesPausedMiddleware",
    # The database does not answer: 503 with Retry-After (a problem document under /api/).
    "league.middleware.DatabaseOutageMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # A login while its user name or address is locked after failures: 429 (league/throttling.py).
    "league.throttling.LoginLockMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, after the session and CSRF: a retried POST is answered, not done again.
    "idempotency.middleware.IdempotencyMiddleware",
]

ROOT_URLCONF = "league.urls"
WSGI_APPLICATION = "league.wsgi.application"
# The web server runs under ASGI (uvicorn): the live page's streams hold no worker each.
ASGI_APPLICATION = "league.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
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


def _prepare_threshold(value: str) -> int | None:
    """``DATABASE_PREPARE_THRESHOLD`` as psycopg takes it: a count of runs, or None (``off``)."""
    value = value.strip().lower()
    if value == "off":
        return None
    if not value.isdigit():
        raise ImproperlyConfigured(
            f"DATABASE_PREPARE_THRESHOLD={value!r}: use a whole number of runs (0 prepares at once) or 'off'."
        )
    return int(value)


# --------------------------------------------------------------------------------------
# Database: DATABASE_URL, or a SQLite file under DATA_DIR.
# https://django-environ.readthedocs.io/en/latest/types.html#environ-env-db-url
# --------------------------------------------------------------------------------------
#: This service's own database (postgres://user@host:5432/name); unset, a SQLite file in DATA_DIR.
DATABASES = {"default": env.db_url("DATABASE_URL", default=f"sqlite:///{DATA_DIR / 'league.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # IMMEDIATE takes the write lock when a transaction starts, so concurrent writers
    # (web, relay, consumers in separate processes) queue instead of failing to upgrade
    # a read lock; WAL lets readers go on meanwhile.
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # A file, not memory, so that processes a test starts (Celery, consumers) share it;
    # one per test process, so that no run meets another's leftover WAL file.
    DATABASES["default"]["TEST"] = {"NAME": str(Path(tempfile.gettempdir()) / f"league-test-{os.getpid()}.sqlite3")}
else:
    #: PostgreSQL: seconds a connection is kept for the next request (forced to 0 under ASGI).
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    DATABASES["default"].setdefault("OPTIONS", {})
    #: PostgreSQL: a statement bound on the server is prepared once it has run this many times on a connection; only the outbox's statement is (events/publisher.py: Django binds its own on the client). ``off`` behind a connection pooler in transaction mode that keeps no prepared statements.
    DATABASES["default"]["OPTIONS"]["prepare_threshold"] = _prepare_threshold(
        env.str("DATABASE_PREPARE_THRESHOLD", default="5")
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --------------------------------------------------------------------------------------
# Auth, i18n, static files
# --------------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
if TESTING:
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Sessions in a cookie signed with SECRET_KEY, not in a table: behind the front door one admin
# login holds for every service's admin pages, whichever process (and database) serves them;
# users keep their ids when a service moves (cutover/copy.py). Logging out or changing the
# password ends the session everywhere (Django checks the password's hash on each request).
SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
WHITENOISE_USE_FINDERS = DEBUG
#: Where `collectstatic` writes the static files WhiteNoise serves.
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(DATA_DIR / "static")))
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG or TESTING
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

# --------------------------------------------------------------------------------------
# REST framework: anonymous users read; writes need a token or a session.
# https://www.django-rest-framework.org/api-guide/settings/
# --------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # Public reads; writes need the model permission a role grants (kernel/permissions.py).
    "DEFAULT_PERMISSION_CLASSES": ["kernel.permissions.RolePermissions"],
    # limit 1..1000, offset bounded: anything else is a 400 (kernel/api.py).
    "DEFAULT_PAGINATION_CLASS": "kernel.api.Pagination",
    "PAGE_SIZE": 50,
    # Every error is an RFC 9457 problem document (application/problem+json).
    "EXCEPTION_HANDLER": "kernel.api.exception_handler",
    # JSON bounded in size (413) and depth (400).
    "DEFAULT_PARSER_CLASSES": [
        "kernel.api.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    # Request rates per anonymous address and per user: 429 over them (league/throttling.py).
    "DEFAULT_THROTTLE_CLASSES": ["league.throttling.AnonThrottle", "league.throttling.UserThrottle"],
    # drf-spectacular's, with public reads documented as public (kernel/openapi.py).
    "DEFAULT_SCHEMA_CLASS": "kernel.openapi.AutoSchema",
}

# Abuse limits (league/throttling.py). Rates are "N/s", "N/min", "N/hour" or "N/day", or "off".
# The test suite and the processes it starts run unthrottled unless a test asks for a rate.
if TESTING:
    for _name in ("API_THROTTLE_ANON", "API_THROTTLE_USER", "API_THROTTLE_SERVICE"):
        os.environ.setdefault(_name, "off")
#: API requests an anonymous address may send (`N/s`, `N/min`, `N/hour`, `N/day`; `off`: no limit); 429 above.
API_THROTTLE_ANON = env.str("API_THROTTLE_ANON", default="300/min")
#: API requests a signed-in user may send (same form); 429 above.
API_THROTTLE_USER = env.str("API_THROTTLE_USER", default="1200/min")
#: API requests a user in the role Service accounts may send (same form; the transfers service's reads).
API_THROTTLE_SERVICE = env.str("API_THROTTLE_SERVICE", default="off")
API_THROTTLE_RATES = {"anon": API_THROTTLE_ANON, "user": API_THROTTLE_USER, "service": API_THROTTLE_SERVICE}
#: Proxies (addresses or networks) whose last X-Forwarded-For entry is the client's address (runstack's front door: loopback).
TRUSTED_PROXIES = env.list("TRUSTED_PROXIES", default=["127.0.0.1", "::1"])
try:
    for _proxy in TRUSTED_PROXIES:
        ipaddress.ip_network(_proxy, strict=False)
except ValueError as exc:
    raise ImproperlyConfigured(f"TRUSTED_PROXIES: {exc} (use addresses or networks, e.g. 10.0.0.0/8)") from None
#: Failed password logins (admin, browsable API) of one user name from one address before logins from there lock.
LOGIN_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=5)
#: Failed password logins from one address, whatever the user name, before logins from there lock.
LOGIN_FAILURE_LIMIT_PER_ADDRESS = env.int("LOGIN_FAILURE_LIMIT_PER_ADDRESS", default=20)
#: How long a login lock lasts (seconds); a locked login, right password included, is a 429.
LOGIN_LOCKOUT_SECONDS = env.int("LOGIN_LOCKOUT_SECONDS", default=15 * 60)
# The throttles' and the login lock's counts, shared by every process of the web server: files
# under DATA_DIR/cache (no server, no write to the database per request). The test process keeps
# its own in memory.
#: Django's cache, where API rates and login failures are counted (e.g. `redis://redis:6379/8` to share them between hosts); default files in DATA_DIR/cache.
CACHES = {
    "default": env.cache_url(
        "CACHE_URL", default="locmemcache://" if TESTING else f"filecache://{DATA_DIR / 'cache'}"
    )
}

# OpenAPI schema at /api/schema/, Swagger UI at /api/docs/ (assets bundled by the sidecar
# package: nothing is fetched from a CDN). https://drf-spectacular.readthedocs.io/en/latest/settings.html
SPECTACULAR_SETTINGS = {
    "TITLE": "League Manager API",
    "DESCRIPTION": (
        "Teams, transfers and fixtures of a football league. Reads are public; writes need a "
        "token (`Authorization: Token <key>`) or a session. Every error is an RFC 9457 problem "
        "document (`application/problem+json`, the `Problem` schema). Send "
        "`X-Request-ID` to follow a request through the events it causes."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # The one error format (a Problem component on every error response) and the links
    # between operations (kernel/openapi.py).
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "kernel.openapi.postprocess",
    ],
}

# --------------------------------------------------------------------------------------
# The event bus (SNS/SQS). No endpoint: AWS itself, credentials from boto3's chain; an
# endpoint: that one (an emulator, a VPC endpoint). See events/aws.py.
# --------------------------------------------------------------------------------------
#: The SNS/SQS endpoint: unset, AWS itself (boto3's endpoint resolution and credential
#: chain); set, that endpoint (an emulator, a VPC endpoint) with the same chain.
AWS_ENDPOINT_URL = env.str("AWS_ENDPOINT_URL", default="") or None
#: The AWS region of the topics and queues.
AWS_REGION = env.str("AWS_REGION", default="eu-west-1")
#: Prefix of every topic and queue name: two installs on one account keep apart.
BUS_PREFIX = env.str("BUS_PREFIX", default="leaguemanager")
BUS_SOURCE_PREFIX = "/league"
# Relay: rows per claim, lease on a claimed row (every SNS call gives up within half of
# it), back-off, and how long transient errors are retried before a row is failed.
#: Rows a single `relay_once` claims (`relay_outbox --once`).
OUTBOX_BATCH_SIZE = env.int("OUTBOX_BATCH_SIZE", default=100)
# The sweeper's batches (relay(): beat, kicks, relay_outbox): larger, fewer round trips.
#: Rows per claim of the relay's sweep (beat, kicks, `relay_outbox`).
OUTBOX_SWEEP_BATCH_SIZE = env.int("OUTBOX_SWEEP_BATCH_SIZE", default=500)
#: How long a claimed row is the claimer's; every SNS call gives up within half of it.
OUTBOX_LEASE_SECONDS = env.int("OUTBOX_LEASE_SECONDS", default=30)
#: PostgreSQL: a sweep claims its next batch while it publishes a full one (two batches in flight).
OUTBOX_RELAY_OVERLAP = env.bool("OUTBOX_RELAY_OVERLAP", default=True)
#: How long a row failing with transient errors is retried before it is marked failed.
OUTBOX_RETRY_FOR_SECONDS = env.int("OUTBOX_RETRY_FOR_SECONDS", default=24 * 3600)
#: First back-off of a row whose publish failed; it doubles per attempt.
OUTBOX_BACKOFF_BASE_SECONDS = env.float("OUTBOX_BACKOFF_BASE_SECONDS", default=1.0)
#: Longest back-off between two attempts of one row.
OUTBOX_BACKOFF_MAX_SECONDS = env.float("OUTBOX_BACKOFF_MAX_SECONDS", default=3600.0)
#: Days published outbox rows are kept (replay, audit) before `purge_events` and beat remove them.
OUTBOX_RETENTION = timedelta(days=env.int("OUTBOX_RETENTION_DAYS", default=7))
# Inbox rows are kept at least as long as a message can come back (events/retention.py:
# max(DLQ, outbox retention) + queue retention = 18 days by default); this may ask longer.
#: Days inbox rows are kept; never less than a message can come back (events/retention.py).
INBOX_RETENTION = timedelta(days=env.int("INBOX_RETENTION_DAYS", default=21))
# Wake the relay after each commit that wrote an outbox row (events/wakeup.py): through a
# Celery task ("celery"), or on PostgreSQL by a NOTIFY in the writer's own statement that the
# Celery worker (or a `manage.py relay_outbox`) waits on ("notify"; SQLite falls back to
# Celery). The default follows the database: notify on PostgreSQL, celery on SQLite.
#: Wake the relay after each commit that wrote an outbox row (off: beat's sweep alone).
OUTBOX_KICK = env.bool("OUTBOX_KICK", default=True)
_ON_POSTGRES = DATABASES["default"]["ENGINE"].endswith("postgresql")
#: How the relay is woken: `celery` (a task) or `notify` (a PostgreSQL NOTIFY the Celery worker's relay thread, or `relay_outbox`, waits on); `notify` on PostgreSQL, `celery` on SQLite.
OUTBOX_WAKEUP = env.str("OUTBOX_WAKEUP", default="notify" if _ON_POSTGRES else "celery").strip().lower()
if OUTBOX_WAKEUP not in ("celery", "notify"):
    raise ImproperlyConfigured(f"OUTBOX_WAKEUP={OUTBOX_WAKEUP!r}: use 'celery' or 'notify'.")
# Supervision.
#: A file a consumer, Celery worker or beat writes its pid to once its start-up is over (events/readiness.py); set by the supervisor that starts it (runstack), empty otherwise.
READY_FILE = env.str("READY_FILE", default="")
# Consumers.
#: Long poll of a receive (SQS WaitTimeSeconds, at most 20); also the longest a stop waits for the receive in flight.
CONSUMER_WAIT_SECONDS = env.int("CONSUMER_WAIT_SECONDS", default=5)
# 10 s: with 6 s, a 2-core machine at load 25 let a few held messages expire before their
# extension landed (redelivered, then skipped by the inbox); with 30 s a kill -9 delayed the
# next event by 31.6 s.
#: Seconds a received message stays hidden from other consumers; short, because the heartbeat extends what a live consumer holds: how long a consumer that died leaves its messages invisible.
CONSUMER_VISIBILITY_TIMEOUT = env.int("CONSUMER_VISIBILITY_TIMEOUT", default=10)
#: Receives before SQS moves a message to the dead-letter queue (the redrive policy).
CONSUMER_MAX_RECEIVE_COUNT = env.int("CONSUMER_MAX_RECEIVE_COUNT", default=5)
#: Visibility back-off of a failed message: this many seconds times 2^(receives-1).
CONSUMER_BACKOFF_BASE_SECONDS = env.int("CONSUMER_BACKOFF_BASE_SECONDS", default=2)
# Database unreachable: no receive; check again after 0.5, 1, 2 ... s up to this cap.
#: The longest wait between database probes while the database is unreachable (no receive meanwhile).
CONSUMER_DB_BACKOFF_MAX_SECONDS = env.float("CONSUMER_DB_BACKOFF_MAX_SECONDS", default=30.0)
# A batch rolled back by a deadlock or serialization failure runs again in-process this often.
#: How often a batch rolled back by a deadlock or serialization failure runs again in-process.
CONSUMER_CONFLICT_RETRIES = env.int("CONSUMER_CONFLICT_RETRIES", default=5)
# Extra modules whose @handler registrations to load (tests start consumers with probes).
#: Extra modules whose handlers the consumers load (the crash suite's probe), comma-separated.
EVENTS_HANDLER_MODULES = env.list("EVENTS_HANDLER_MODULES", default=[])
# Broadcast instance queues: heartbeat tag interval, and the age after which
# `manage.py reap_queues` treats an instance as dead.
#: How often a broadcast consumer tags its instance queue as alive.
BROADCAST_HEARTBEAT_SECONDS = env.int("BROADCAST_HEARTBEAT_SECONDS", default=30)
#: Age of the last heartbeat after which `reap_queues` removes an instance queue.
BROADCAST_REAP_AFTER_SECONDS = env.int("BROADCAST_REAP_AFTER_SECONDS", default=300)
# Queue retention: source queues 4 days, their DLQs longer (14 days, the SQS maximum),
# since a dead-lettered message keeps its first enqueue time.
#: How long a service queue keeps a message (SQS MessageRetentionPeriod).
BUS_QUEUE_RETENTION_SECONDS = env.int("BUS_QUEUE_RETENTION_SECONDS", default=4 * 24 * 3600)
#: How long a dead-letter queue keeps a message (longer than the source: a dead-lettered message keeps its first enqueue time).
BUS_DLQ_RETENTION_SECONDS = env.int("BUS_DLQ_RETENTION_SECONDS", default=14 * 24 * 3600)
# The league page's live feed (live/feed.py): each ASGI web process consumes its own
# broadcast queue (long poll of this many seconds; also the most a clean stop waits for
# it) and keeps each browser's stream open with a comment every LIVE_KEEPALIVE_SECONDS.
#: The league page's live feed (each ASGI web process consumes its own broadcast queue).
LIVE_FEED = env.bool("LIVE_FEED", default=True)
#: Long poll of the live feed's receive; also the most a clean stop waits for it.
LIVE_FEED_WAIT_SECONDS = env.int("LIVE_FEED_WAIT_SECONDS", default=5)
#: A comment is sent on each open live stream this often, so proxies keep it open.
LIVE_KEEPALIVE_SECONDS = env.float("LIVE_KEEPALIVE_SECONDS", default=15.0)
# FIFO topics and queues (MessageGroupId = aggregate, MessageDeduplicationId = event id).
#: FIFO topics and queues (MessageGroupId is the aggregate, MessageDeduplicationId the event id).
BUS_FIFO = env.bool("BUS_FIFO", default=False)

# --------------------------------------------------------------------------------------
# Celery: a broker that needs no server unless CELERY_BROKER_URL is set.
# https://docs.celeryq.dev/en/stable/userguide/configuration.html
# --------------------------------------------------------------------------------------
#: Celery's broker, e.g. redis://127.0.0.1:6379/0; unset, a broker on the filesystem in DATA_DIR.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
_broker_dir = DATA_DIR / "broker"
CELERY_BROKER_TRANSPORT_OPTIONS = (
    {
        "data_folder_in": str(_broker_dir / "out"),
        "data_folder_out": str(_broker_dir / "out"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
        "polling_interval": 0.1,
    }
    if CELERY_BROKER_URL.startswith("filesystem")
    else {}
)
if CELERY_BROKER_URL.startswith("filesystem"):
    (_broker_dir / "out").mkdir(parents=True, exist_ok=True)
    (_broker_dir / "processed").mkdir(parents=True, exist_ok=True)
CELERY_TASK_IGNORE_RESULT = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
#: Run Celery tasks in the calling process (tests).
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
# The queue tasks go to and the worker reads: a private name keeps runs that share one
# Redis (benchmarks, parallel test suites) from taking each other's tasks.
#: The queue tasks go to and the worker reads: runs that share one Redis keep apart.
CELERY_TASK_DEFAULT_QUEUE = env.str("CELERY_TASK_DEFAULT_QUEUE", default="celery")
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")
#: Seconds between two runs of the relay's sweep by Celery beat.
CELERY_RELAY_INTERVAL_SECONDS = env.float("CELERY_RELAY_INTERVAL_SECONDS", default=1.0)

# --------------------------------------------------------------------------------------
# Services calling each other over HTTP (transfers -> teams).
# --------------------------------------------------------------------------------------
#: The teams service's base URL, for the transfers service's snapshot and misses. No default:
#: a guessed port on a shared host is someone else's server; a web serving transfers refuses
#: to start without it (transfers/teams_client.py). runstack and compose set it.
TEAMS_SERVICE_URL = env.str("TEAMS_SERVICE_URL", default="")
# A service account's token (`manage.py service_account transfers-service` on the teams
# service): the export needs the permission teams.export_team.
#: The transfers service's token on the teams service (a service account with teams.export_team).
TEAMS_SERVICE_TOKEN = env.str("TEAMS_SERVICE_TOKEN", default="")
# Teams per page when transfers reads the export (the server allows at most 1000).
#: Teams per page when transfers reads the export (the server allows at most 1000).
TEAMS_EXPORT_PAGE_SIZE = env.int("TEAMS_EXPORT_PAGE_SIZE", default=500)
#: Seconds a call to the teams service may take.
TEAMS_SERVICE_TIMEOUT = env.float("TEAMS_SERVICE_TIMEOUT", default=5.0)
#: Attempts of a call to the teams service on a connection error or a 5xx.
TEAMS_SERVICE_RETRIES = env.int("TEAMS_SERVICE_RETRIES", default=3)
# The transfers consumer re-syncs its replica at start when it is older than this.
#: The transfers consumer re-reads the teams snapshot at start when its replica is older than this.
TEAMS_CACHE_MAX_AGE = timedelta(seconds=env.int("TEAMS_CACHE_MAX_AGE_SECONDS", default=3600))
#: Seconds between beat's fetches of the teams the transfers replica marked (a gap, a player it lacks).
TEAMS_HEAL_INTERVAL_SECONDS = env.float("TEAMS_HEAL_INTERVAL_SECONDS", default=5.0)
#: Seconds a mark waits before its fetch: an event only late may clear it first.
TEAMS_HEAL_GRACE_SECONDS = env.float("TEAMS_HEAL_GRACE_SECONDS", default=2.0)
#: Seconds between reconciliations of the team replicas with the teams service's digest.
TEAMS_RECONCILE_SECONDS = env.float("TEAMS_RECONCILE_SECONDS", default=60.0)
#: Teams per bucket of that digest: a bucket that differs is read in full.
TEAMS_RECONCILE_BUCKET = env.int("TEAMS_RECONCILE_BUCKET", default=500)

# Event traces (events/trace.py): the admin's trace page asks each of these base URLs for its
# part (microservices: every service's web, e.g. http://teams-web:8000,...); empty: this
# database only (monolith). Services prove themselves to each other with INTERNAL_TOKEN
# (`Authorization: Bearer ...` on /internal/...); unset, /internal/ answers 403 and the
# trace page shows this database's part only, saying why.
#: Base URLs of every service's web, asked for their part of an event trace (microservices); empty: this database only.
TRACE_SERVICE_URLS = env.list("TRACE_SERVICE_URLS", default=[])
#: The services' shared token for /internal/ (`Authorization: Bearer ...`); unset, /internal/ answers 403.
INTERNAL_TOKEN = env.str("INTERNAL_TOKEN", default="")
#: Seconds the trace page waits for each service's part.
TRACE_FETCH_TIMEOUT = env.float("TRACE_FETCH_TIMEOUT", default=3.0)

# --------------------------------------------------------------------------------------
# OpenTelemetry (league/telemetry.py): spans are exported over OTLP/HTTP only when
# OTEL_EXPORTER_OTLP_ENDPOINT is set (e.g. http://jaeger:4318); unset, nothing is installed.
# https://opentelemetry.io/docs/specs/otel/configuration/sdk-environment-variables/
# --------------------------------------------------------------------------------------
#: OpenTelemetry: export spans over OTLP/HTTP to this endpoint (e.g. http://jaeger:4318); unset, nothing is exported.
OTEL_EXPORTER_OTLP_ENDPOINT = env.str("OTEL_EXPORTER_OTLP_ENDPOINT", default="")
#: OpenTelemetry's service name of this process.
OTEL_SERVICE_NAME = env.str(
    "OTEL_SERVICE_NAME", default="league" if LEAGUE_SERVICE == "all" else "league-" + "+".join(ACTIVE_SERVICES)
)

# --------------------------------------------------------------------------------------
# Domain rules
# --------------------------------------------------------------------------------------
#: Most players in one team.
SQUAD_LIMIT = env.int("SQUAD_LIMIT", default=25)
# Scheduling n teams writes n(n-1) fixtures inside the request (40 teams: 1,560 fixtures).
#: The most teams a season may have (`POST /api/seasons/` writes its fixtures before it answers).
SEASON_MAX_TEAMS = env.int("SEASON_MAX_TEAMS", default=40)
if SEASON_MAX_TEAMS < 2:
    raise ImproperlyConfigured(f"SEASON_MAX_TEAMS must be at least 2; got {SEASON_MAX_TEAMS}.")
#: How long an Idempotency-Key and its response are kept, in hours (idempotency/middleware.py).
IDEMPOTENCY_KEY_TTL = timedelta(hours=env.int("IDEMPOTENCY_KEY_HOURS", default=24))
# The saga's deadline: a transfer the teams service has not answered within this many
# seconds is cancelled through teams (transfers.services.transfers_expire).
#: The saga's deadline: a transfer teams has not answered within this is cancelled through teams.
TRANSFER_TIMEOUT_SECONDS = env.int("TRANSFER_TIMEOUT_SECONDS", default=900)
if TRANSFER_TIMEOUT_SECONDS < 1:
    raise ImproperlyConfigured(
        f"TRANSFER_TIMEOUT_SECONDS must be at least 1 (seconds); got {TRANSFER_TIMEOUT_SECONDS}."
    )
# Transfer window as ISO dates (inclusive); unset means always open.
#: First day transfers may be requested (ISO date, inclusive); unset, always open.
_opens = env.str("TRANSFER_WINDOW_OPENS", default="")
#: Last day transfers may be requested (ISO date, inclusive); unset, always open.
_closes = env.str("TRANSFER_WINDOW_CLOSES", default="")
try:
    TRANSFER_WINDOW_OPENS = date.fromisoformat(_opens) if _opens else None
    TRANSFER_WINDOW_CLOSES = date.fromisoformat(_closes) if _closes else None
except ValueError as exc:
    raise ImproperlyConfigured(f"TRANSFER_WINDOW_OPENS/CLOSES must be ISO dates (2026-07-01): {exc}") from None

# --------------------------------------------------------------------------------------
# Logging: structured, one line per event.
# --------------------------------------------------------------------------------------
#: Level of the structured logs.
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
# JSON lines in production, a readable console in development; stdlib logging and
# structlog share one pipeline with the correlation/causation ids (league/logging.py).
#: JSON lines (production) or a readable console (development).
LOG_JSON = env.bool("LOG_JSON", default=not DEBUG)
from league.logging import configure_structlog, logging_config  # noqa: E402

configure_structlog()
LOGGING = logging_config(level=LOG_LEVEL, json=LOG_JSON)

# --------------------------------------------------------------------------------------
# Operations: /healthz, /readyz and /metrics (league/health.py, events/metrics.py).
# Counters are per process; with PROMETHEUS_MULTIPROC_DIR set (gunicorn workers, Celery,
# consumers on one host) prometheus-client aggregates them across processes.
# --------------------------------------------------------------------------------------
#: Seconds each check of /readyz (and the admin's bus page) may take.
HEALTH_CHECK_TIMEOUT = env.float("HEALTH_CHECK_TIMEOUT", default=2.0)
#: Retry-After (seconds) of the 503 a request gets while the database does not answer
#: (league.middleware.DatabaseOutageMiddleware).
DATABASE_OUTAGE_RETRY_AFTER_SECONDS = env.int("DATABASE_OUTAGE_RETRY_AFTER_SECONDS", default=5)
