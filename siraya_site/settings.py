"""Settings for Siraya Model Router, read from the environment (django-environ).

Development needs no configuration: SQLite in ``var/``, a generated secret key and
encryption key kept in ``var/dev-secrets.json`` (ignored by git). With
``SIRAYA_ENV=production`` every secret must come from the environment.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import environ
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

from lib.devsecrets import dev_secret

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(environ.Env().str("SIRAYA_VAR_DIR", default=str(BASE_DIR / "var")))

env = environ.Env()
if (BASE_DIR / ".env").is_file():
    environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

SIRAYA_ENV = env.str("SIRAYA_ENV", default="development")
PRODUCTION = SIRAYA_ENV == "production"


def _secret(name: str) -> str:
    value = env.str(name, default="")
    if value:
        return value
    if PRODUCTION:
        raise ImproperlyConfigured(f"{name} must be set when SIRAYA_ENV=production")
    return dev_secret(VAR_DIR, name)


SECRET_KEY = _secret("SECRET_KEY")
# Comma-separated Fernet keys; the first encrypts, all decrypt (rotation).
SIRAYA_ENCRYPTION_KEY = _secret("SIRAYA_ENCRYPTION_KEY")

DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=[] if PRODUCTION else ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "axes",
    "csp",
    "routing",
    "billing",
    "reports",
    "ops",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes requires: turns a locked-out login into its lockout response.
    "axes.middleware.AxesMiddleware",
]

# Content-Security-Policy (django-csp) on every page the router renders (usage reports, login,
# admin): scripts and styles only from the router's own /static/, nothing inline, nothing
# framed, forms post only here. The templates keep their script and CSS in static files; the
# usage page's chart data travels as JSON (json_script), which the browser does not run.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [NONE],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF],
        "font-src": [SELF],
        "connect-src": [SELF],
        "manifest-src": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
        "base-uri": [NONE],
        "object-src": [NONE],
    }
}

ROOT_URLCONF = "siraya_site.urls"
ASGI_APPLICATION = "siraya_site.asgi.application"

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

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'siraya.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets readers run beside the writer; IMMEDIATE takes the write lock at BEGIN so
    # concurrent transactions queue on the busy timeout instead of failing to upgrade.
    # The busy timeout: how long a write waits for a lock held by another connection (a long
    # VACUUM or backup) before it fails as an outage (billing.outage: the write is kept).
    DATABASES["default"]["OPTIONS"] = {
        "timeout": env.float("SIRAYA_SQLITE_BUSY_SECONDS", default=30.0),
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    test_db = env.str("SIRAYA_TEST_SQLITE", default="")
    if test_db:
        DATABASES["default"]["TEST"] = {"NAME": test_db}
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", 60)
    # A connection broken by a database restart is found and replaced before its next use.
    DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)
    # A database that does not answer (a failover, a dropped route) costs a bounded wait, not a
    # hang of the thread every request's database work goes through (libpq: whole seconds, >= 2).
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("connect_timeout", 2)
# PostgreSQL: the relay's per-request statements (billing.hotsql) are prepared once per
# connection instead of parsed and planned on every execution. Turn off behind a pooler in
# transaction mode that does not keep prepared statements (PgBouncer before 1.21, or with
# max_prepared_statements = 0).
SIRAYA_DB_PREPARED = env.bool("SIRAYA_DB_PREPARED", default=True)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# Login throttling (django-axes) for /admin/login/ and /accounts/login/: after
# SIRAYA_LOGIN_FAILURE_LIMIT failed logins for one username from one client address, further
# attempts for that pair (even with the right password) answer 429 for
# SIRAYA_LOGIN_COOLOFF_MINUTES, counted again from each attempt made while locked. 0 turns it
# off; on by default in production (in development the router only listens on loopback).
SIRAYA_LOGIN_FAILURE_LIMIT = env.int("SIRAYA_LOGIN_FAILURE_LIMIT", default=5 if PRODUCTION else 0)
SIRAYA_LOGIN_COOLOFF_MINUTES = env.float("SIRAYA_LOGIN_COOLOFF_MINUTES", default=15.0)
# Reverse proxies in front of the router that append the client's address to X-Forwarded-For;
# 0 (the default) trusts no such header and takes the socket's peer address.
SIRAYA_TRUSTED_PROXY_COUNT = env.int("SIRAYA_TRUSTED_PROXY_COUNT", default=0)
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_ENABLED = SIRAYA_LOGIN_FAILURE_LIMIT > 0
AXES_FAILURE_LIMIT = max(SIRAYA_LOGIN_FAILURE_LIMIT, 1)
AXES_COOLOFF_TIME = timedelta(minutes=SIRAYA_LOGIN_COOLOFF_MINUTES)
# Username and address together: a guesser is stopped without letting anyone lock the operator out.
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "reports.login.client_address"
AXES_LOCKOUT_CALLABLE = "reports.login.lockout_response"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"] if (BASE_DIR / "static").is_dir() else []
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "reports:usage"
LOGOUT_REDIRECT_URL = "login"
# The router serves /static/ itself (admin and report pages: CSS, Chart.js) so it needs no web
# server in front; turn off when a proxy serves the output of `collectstatic` (STATIC_ROOT).
SIRAYA_SERVE_STATIC = env.bool("SIRAYA_SERVE_STATIC", default=True)

REDIS_URL = env.str("REDIS_URL", default="")
# Prefix of every Redis key the router writes (several deployments or test runs can share one Redis).
SIRAYA_REDIS_PREFIX = env.str("SIRAYA_REDIS_PREFIX", default="siraya:")

# The router's own knobs.
SIRAYA_KEEPALIVE_SECONDS = env.float("SIRAYA_KEEPALIVE_SECONDS", default=10.0)
# Largest request body under /v1/ (413 above); every other path (admin and login forms) gets
# SIRAYA_MAX_FORM_BODY_BYTES, checked before Django spools the body (routing.relay.edge).
SIRAYA_MAX_BODY_BYTES = env.int("SIRAYA_MAX_BODY_BYTES", default=4 * 1024 * 1024)
SIRAYA_MAX_FORM_BODY_BYTES = env.int("SIRAYA_MAX_FORM_BODY_BYTES", default=1024 * 1024)
# Seconds a request body may take to arrive in full (408 and the connection closed after).
SIRAYA_BODY_READ_SECONDS = env.float("SIRAYA_BODY_READ_SECONDS", default=30.0)
SIRAYA_CONNECT_TIMEOUT = env.float("SIRAYA_CONNECT_TIMEOUT", default=10.0)
SIRAYA_FIRST_BYTE_TIMEOUT = env.float("SIRAYA_FIRST_BYTE_TIMEOUT", default=120.0)
SIRAYA_IDLE_TIMEOUT = env.float("SIRAYA_IDLE_TIMEOUT", default=120.0)
# A deployment failing this many times within the window is skipped for the cooldown (seconds).
SIRAYA_COOLDOWN_FAILURES = env.int("SIRAYA_COOLDOWN_FAILURES", default=3)
SIRAYA_COOLDOWN_WINDOW_SECONDS = env.float("SIRAYA_COOLDOWN_WINDOW_SECONDS", default=60.0)
SIRAYA_COOLDOWN_SECONDS = env.float("SIRAYA_COOLDOWN_SECONDS", default=30.0)
# Seconds a verified API key stays in the in-process cache (revocation takes effect within it).
SIRAYA_KEY_CACHE_SECONDS = env.float("SIRAYA_KEY_CACHE_SECONDS", default=5.0)
# Seconds an unknown key's miss is remembered (no database query per sprayed key).
SIRAYA_KEY_CACHE_MISS_SECONDS = env.float("SIRAYA_KEY_CACHE_MISS_SECONDS", default=1.0)
# Entries the key cache holds: this many known keys and, apart, this many recent misses (LRU).
SIRAYA_KEY_CACHE_SIZE = env.int("SIRAYA_KEY_CACHE_SIZE", default=10_000)
# Seconds a model route (prices, deployments) stays cached in process; see routing.routes.
SIRAYA_ROUTE_CACHE_SECONDS = env.float("SIRAYA_ROUTE_CACHE_SECONDS", default=1.0)
# Seconds a request's credit hold counts against its key; a hold left by a killed process
# stops counting after this (set it above the longest request you serve).
SIRAYA_RESERVATION_SECONDS = env.float("SIRAYA_RESERVATION_SECONDS", default=3600.0)
# Seconds to wait for Redis to connect and to answer, for every use of it (billing.shared_redis
# declares what each feature does then: limits refuse with 503, cooldowns carry on).
SIRAYA_REDIS_TIMEOUT = env.float("SIRAYA_REDIS_TIMEOUT", default=0.5)
# Encoding used to count tokens when a model has none configured.
SIRAYA_DEFAULT_ENCODING = env.str("SIRAYA_DEFAULT_ENCODING", default="cl100k_base")
# Seconds a concurrent-stream slot lives in Redis unless its stream refreshes it (a dead process's slots expire).
SIRAYA_STREAM_SLOT_TTL = env.float("SIRAYA_STREAM_SLOT_TTL", default=120.0)
# Prometheus metrics at /metrics; with a token, scrapers must send "Authorization: Bearer <token>".
# Tracing is configured by the OpenTelemetry SDK's own OTEL_* variables (lib.tracing). This one
# links a usage record's trace id to the operator's trace viewer: a URL with {trace_id} in it,
# e.g. https://jaeger.example.com/trace/{trace_id} (empty: the id is shown without a link).
SIRAYA_TRACE_URL = env.str("SIRAYA_TRACE_URL", default="")
SIRAYA_METRICS_ENABLED = env.bool("SIRAYA_METRICS_ENABLED", default=False)
SIRAYA_METRICS_TOKEN = env.str("SIRAYA_METRICS_TOKEN", default="")

# Reliability (README "Reliability"). A running stream's delivered tokens are checkpointed
# every SIRAYA_CHECKPOINT_SECONDS or SIRAYA_CHECKPOINT_TOKENS, whichever comes first.
SIRAYA_CHECKPOINT_SECONDS = env.float("SIRAYA_CHECKPOINT_SECONDS", default=1.0)
SIRAYA_CHECKPOINT_TOKENS = env.int("SIRAYA_CHECKPOINT_TOKENS", default=256)
# Each router process writes a heartbeat; one silent for SIRAYA_INSTANCE_STALE_SECONDS is dead
# and its in-progress records are settled as interrupted by the next process that looks.
SIRAYA_HEARTBEAT_SECONDS = env.float("SIRAYA_HEARTBEAT_SECONDS", default=5.0)
SIRAYA_INSTANCE_STALE_SECONDS = env.float("SIRAYA_INSTANCE_STALE_SECONDS", default=30.0)
# Usage rollups (README "Reports at scale"): the router recomputes the hourly rollups at most every
# SIRAYA_ROLLUP_SECONDS (checked on each heartbeat); a late settlement reaches its hour within that lag.
# 0 turns the router's refresh off (run `manage.py usage rollup` from cron instead).
SIRAYA_ROLLUP_SECONDS = env.float("SIRAYA_ROLLUP_SECONDS", default=60.0)
# `manage.py usage prune` deletes settled raw records older than this many days (the rollups stay).
SIRAYA_USAGE_RETENTION_DAYS = env.int("SIRAYA_USAGE_RETENTION_DAYS", default=400)
# `manage.py responses prune` deletes Responses API answers stored (store: true) more than this
# many days ago; OpenAI keeps them 30 days.
SIRAYA_RESPONSES_RETENTION_DAYS = env.int("SIRAYA_RESPONSES_RETENTION_DAYS", default=30)

# A request that needs the database to be admitted waits for it at most this long, then gets a
# 503 database_unavailable (Retry-After); admitted requests' writes are kept and retried until
# the database is back (billing.pending): in memory up to SIRAYA_PENDING_WRITES_MEMORY writes,
# then in an fsync'd journal file per process in SIRAYA_JOURNAL_DIR; retried every
# SIRAYA_PENDING_RETRY_SECONDS at most while the database is down.
SIRAYA_DB_UNAVAILABLE_SECONDS = env.float("SIRAYA_DB_UNAVAILABLE_SECONDS", default=2.0)
SIRAYA_PENDING_WRITES_MEMORY = env.int("SIRAYA_PENDING_WRITES_MEMORY", default=1000)
SIRAYA_PENDING_RETRY_SECONDS = env.float("SIRAYA_PENDING_RETRY_SECONDS", default=1.0)
SIRAYA_JOURNAL_DIR = env.str("SIRAYA_JOURNAL_DIR", default=str(VAR_DIR / "journal"))
# During an outage, "refuse" (the default) answers a request that needs the database to be
# admitted with the 503; "journal" admits requests of keys in the key cache against the journal,
# their credit limits checked against this process's last known spend (README "Reliability").
SIRAYA_ADMIT_DURING_OUTAGE = env.str("SIRAYA_ADMIT_DURING_OUTAGE", default="refuse")
if SIRAYA_ADMIT_DURING_OUTAGE not in ("refuse", "journal"):
    raise ImproperlyConfigured(
        f"SIRAYA_ADMIT_DURING_OUTAGE must be 'refuse' or 'journal', not {SIRAYA_ADMIT_DURING_OUTAGE!r}"
    )
# Threads that count long prompts' tokens (billing.counting), apart from the database writer.
SIRAYA_TOKEN_COUNT_WORKERS = env.int("SIRAYA_TOKEN_COUNT_WORKERS", default=2)
# A client that takes no data for this long (its socket buffer full) is treated as gone.
SIRAYA_CLIENT_STALL_SECONDS = env.float("SIRAYA_CLIENT_STALL_SECONDS", default=30.0)
# On SIGTERM, running streams get this long to finish before they are cancelled and settled.
SIRAYA_SHUTDOWN_GRACE_SECONDS = env.float("SIRAYA_SHUTDOWN_GRACE_SECONDS", default=30.0)
# Hosts vendor requests (and so vendor credentials) may go to, comma-separated; empty: any host.
# Entries: names where '*' is one DNS label (*.openai.azure.com, bedrock-runtime.*.amazonaws.com),
# IP addresses or networks (10.0.0.5, 10.0.0.0/8, ::1), or localhost. Checked when a vendor is
# saved and before every request (routing.vendors.hosts).
SIRAYA_VENDOR_HOSTS = env.list("SIRAYA_VENDOR_HOSTS", default=[])
# In production, loopback, link-local and private addresses (and names resolving to them when a
# vendor is saved) are refused unless an entry of SIRAYA_VENDOR_HOSTS names them: a name pattern
# that matches the name, the IP address or a network holding it, or "localhost" itself.
SIRAYA_VENDOR_REFUSE_INTERNAL = PRODUCTION
# Test-only introspection (GET /debug/tasks); never on in production.
SIRAYA_DEBUG_ENDPOINTS = env.bool("SIRAYA_DEBUG_ENDPOINTS", default=False) and not PRODUCTION

# One JSON object per line (SIRAYA_LOG_FORMAT=plain for human-readable lines), each with the
# generation id of the request it belongs to; known secret shapes are scrubbed (lib.logs).
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"generation_id": {"()": "lib.logs.GenerationIdFilter"}},
    "formatters": {
        "json": {"()": "lib.logs.JsonFormatter"},
        "plain": {"()": "lib.logs.PlainFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": env.str("SIRAYA_LOG_FORMAT", default="json"),
            "filters": ["generation_id"],
        }
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

if PRODUCTION:
    if not ALLOWED_HOSTS:
        raise ImproperlyConfigured("ALLOWED_HOSTS must be set when SIRAYA_ENV=production")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    # Probes and scrapers inside the network speak plain HTTP to the process.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
    # `manage.py check --deploy` runs in CI with no warning left. Silenced, with the reason:
    # W021 (HSTS preload off): preloading commits the whole domain and its subdomains to
    # HTTPS in browsers' built-in lists, hard to undo; the operator opts in with
    # SECURE_HSTS_PRELOAD=true once every subdomain serves HTTPS.
    SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]
