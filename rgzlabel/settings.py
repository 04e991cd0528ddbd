"""The one settings module of rgzlabel, configured by environment variables.

Every variable is listed with its default in ``.env.example``. The defaults run on one
machine with nothing installed: SQLite in the data folder, a file-system Celery broker
(a real worker process, never eager mode) and CPU training.
"""

from __future__ import annotations

import os
from pathlib import Path

from rgzlabel.env import (
    ConfigError,
    database_from_url,
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_list,
    env_str,
    redis_url,
)

BASE_DIR = Path(__file__).resolve().parent.parent

# --- Core -------------------------------------------------------------------------------
DEBUG = env_bool("DJANGO_DEBUG", True)
SECRET_KEY = env_str("DJANGO_SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ConfigError("DJANGO_SECRET_KEY (or DJANGO_SECRET_KEY_FILE) must be set when DJANGO_DEBUG is false")
    SECRET_KEY = "dev-only-insecure-key-do-not-use-in-production-0123456789abcdef"
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
if not DEBUG and not ALLOWED_HOSTS:
    raise ConfigError("DJANGO_ALLOWED_HOSTS must list the site's host names when DJANGO_DEBUG is false")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

# Where SQLite, the file-system broker, checkpoints and embedding matrices live.
DATA_DIR = Path(env_str("RGZ_DATA_DIR", str(BASE_DIR / "var"))).resolve()
# The read-only shared datasets (MiraBest, Griese, FR-DEEP, FITS); read in place.
SHARED_DATA_DIR = Path(env_str("RGZ_SHARED_DATA", str(BASE_DIR.parent / "shared" / "data"))).resolve()

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rgzlabel.catalog",
    "rgzlabel.labelling",
    "rgzlabel.learning",
    "rgzlabel.science",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "rgzlabel.urls"
WSGI_APPLICATION = "rgzlabel.wsgi.application"

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
                "rgzlabel.science.context_processors.roles",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------------------
DATABASE_URL = env_str("DATABASE_URL")
DATA_DIR.mkdir(parents=True, exist_ok=True)
(DATA_DIR / "static").mkdir(exist_ok=True)  # WhiteNoise warns on every request otherwise
if DATABASE_URL:
    DATABASES = {"default": database_from_url("DATABASE_URL", DATABASE_URL)}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": DATA_DIR / "rgzlabel.sqlite3",
            # A file, not :memory:, so that a real worker process can share the test database.
            "TEST": {"NAME": str(DATA_DIR / "test-rgzlabel.sqlite3")},
        }
    }
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web server and the worker write at the same time: WAL lets readers go on during
    # a write, IMMEDIATE takes the write lock up front instead of failing a transaction
    # half-way with "database is locked".
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Auth, i18n, static -----------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "labelling:label"
LOGOUT_REDIRECT_URL = "home"

LANGUAGE_CODE = "en-gb"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "static"
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
EMAIL_BACKEND = env_str("DJANGO_EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")

# --- Production hardening (on whenever DEBUG is off; each can be overridden) ------------
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", not DEBUG)
SESSION_COOKIE_SECURE = env_bool("DJANGO_SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("DJANGO_CSRF_COOKIE_SECURE", not DEBUG)
SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 0 if DEBUG else 31_536_000, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", not DEBUG)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", not DEBUG)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Behind a TLS-terminating proxy: trust its X-Forwarded-Proto, and take the client's address
# (for rate limits) from the last X-Forwarded-For entry, the one the proxy appended.
RGZ_BEHIND_PROXY = env_bool("DJANGO_BEHIND_PROXY", False)
if RGZ_BEHIND_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# --- Celery -----------------------------------------------------------------------------
# REDIS_URL (or CELERY_BROKER_URL) selects Redis as broker and result store. Without it
# the broker is kombu's file-system transport: no server process, but still a real worker.
_broker = env_str("CELERY_BROKER_URL") or env_str("REDIS_URL")
BROKER_FOLDER = DATA_DIR / "broker"
if _broker:
    CELERY_BROKER_URL = redis_url("CELERY_BROKER_URL" if env_str("CELERY_BROKER_URL") else "REDIS_URL", _broker)
    CELERY_RESULT_BACKEND = env_str("CELERY_RESULT_BACKEND") or CELERY_BROKER_URL
    CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {
        # A task not acknowledged within this time (its worker died) is delivered again.
        "visibility_timeout": env_int("RGZ_VISIBILITY_TIMEOUT_S", 3 * 3600, minimum=60),
        # Short: a trigger waits for this (twice, with one retry) before it reports the broker down.
        "socket_connect_timeout": 2,
    }
    BROKER_DESCRIPTION = f"Redis ({'CELERY_BROKER_URL' if env_str('CELERY_BROKER_URL') else 'REDIS_URL'})"
else:
    CELERY_BROKER_URL = "filesystem://"
    CELERY_RESULT_BACKEND = (BROKER_FOLDER / "results").as_uri()
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_FOLDER / "queue"),
        "data_folder_out": str(BROKER_FOLDER / "queue"),
        # Processed messages are renamed within one file system, which is atomic, so two
        # worker processes can never both take the same message.
        "store_processed": True,
        "processed_folder": str(BROKER_FOLDER / "processed"),
        # Exchange tables (worker control, fan-out); the default is the current directory.
        "control_folder": str(BROKER_FOLDER / "control"),
        # How often an idle worker looks for messages (kombu's default: 1 s). A search by image
        # waits for its query worker, so a tenth of a second; a listing of a small folder.
        "polling_interval": 0.1,
    }
    BROKER_DESCRIPTION = f"file-system broker in {BROKER_FOLDER}"
    # kombu's file-system transport expects its folders to exist; creating them here means
    # the web process, the worker and a management command all agree without a set-up step.
    for _folder in ("queue", "processed", "results", "control"):
        (BROKER_FOLDER / _folder).mkdir(parents=True, exist_ok=True)

# Sessions: with Redis, Django's cached_db engine reads them from Redis (one database round trip
# fewer per request) and keeps the database as the record; see rgzlabel/sessions.py. Without it,
# from the database.
_session_redis = env_str("RGZ_SESSION_CACHE_URL") or env_str("REDIS_URL")
if _session_redis:
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "sessions": {
            "BACKEND": "rgzlabel.sessions.SessionCache",
            "LOCATION": redis_url(
                "RGZ_SESSION_CACHE_URL" if env_str("RGZ_SESSION_CACHE_URL") else "REDIS_URL", _session_redis
            ),
            "TIMEOUT": env_int("RGZ_SESSION_CACHE_S", 300, minimum=1),
            "KEY_PREFIX": "rgzlabel",
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        },
    }
    SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"
    SESSION_CACHE_ALIAS = "sessions"

CELERY_TASK_ALWAYS_EAGER = False  # jobs always run in a worker process
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TRACK_STARTED = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_EXPIRES = 7 * 24 * 3600
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_SOFT_TIME_LIMIT = env_int("RGZ_TASK_SOFT_TIME_LIMIT_S", 6 * 3600, minimum=10)
CELERY_TASK_TIME_LIMIT = CELERY_TASK_SOFT_TIME_LIMIT + 300
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# --- REST API (Django REST framework; OpenAPI schema by drf-spectacular) ---------------------
INSTALLED_APPS += ["rest_framework", "rest_framework.authtoken", "drf_spectacular", "drf_spectacular_sidecar"]
REST_FRAMEWORK = {
    # Token first: an anonymous API call is answered 401 with "WWW-Authenticate: Token".
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rgzlabel.science.pagination.ApiPagination",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "rgzlabel API",
    "DESCRIPTION": "Sources, consensus, votes, model versions, jobs and exports of the rgzlabel campaign.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI served from our own static files: no CDN, so the docs work offline too.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- rgzlabel -----------------------------------------------------------------------------
# Seconds a job may go without a heartbeat before it is declared lost (its worker died).
RGZ_JOB_HEARTBEAT_TIMEOUT_S = env_int("RGZ_JOB_HEARTBEAT_TIMEOUT_S", 600, minimum=10)
# Seconds a queued job may stay without a Celery task id (its message never reached the broker)
# before beat's sweep sends it again, or fails it while the broker is still down.
RGZ_JOB_SEND_GRACE_S = env_int("RGZ_JOB_SEND_GRACE_S", 60, minimum=5)
# Beat's schedule: seconds between the learning tick (retrain / pretrain when due) and the sweep of
# lost jobs, and between Dawid-Skene refits. Shortened only by benchmarks that replay a campaign.
RGZ_TICK_S = env_int("RGZ_TICK_S", 60, minimum=1)
RGZ_CONSENSUS_EVERY_S = env_int("RGZ_CONSENSUS_EVERY_S", 600, minimum=1)
# Training preset used for the background CPU pretraining started by the main command (and, by
# default, the loop's later ones). cpu-vicreg: on validation folds of the MiraBest training set its
# frozen 8-view probe erred 11.5 % at 145 labels against cpu-quick's (BYOL) 18.0 %, 3 encoders each,
# docs/benchmarks.md "Issue 12, fourth day".
RGZ_PRETRAIN_PRESET = env_str("RGZ_PRETRAIN_PRESET", "cpu-vicreg")
# Processes a pretraining trains in (torchrun, DistributedDataParallel; one per GPU): 1 trains in the
# worker itself; more split the preset's batch across them and give the same steps.
RGZ_PRETRAIN_PROCESSES = env_int("RGZ_PRETRAIN_PROCESSES", 1, minimum=1)
# Seconds between a pretraining's resumable saves (also when a worker shutdown stops it; 0: every step).
RGZ_RESUME_EVERY_S = env_int("RGZ_RESUME_EVERY_S", 180, minimum=0)
# Fine-tuning settings of finetune jobs (ml.config.FINETUNE_PRESETS): the paper's 100 epochs, or 40.
RGZ_FINETUNE_PRESET = env_choice("RGZ_FINETUNE_PRESET", "cpu-quick", ("paper", "cpu-quick", "cpu-semisup", "tiny"))
# Most unlabelled sources a semi-supervised fine-tuning (preset cpu-semisup) draws from the pool, at random.
RGZ_SEMISUP_POOL = env_int("RGZ_SEMISUP_POOL", 20_000, minimum=1)
# Torch device for training and embedding: "auto" picks CUDA when the worker has it.
RGZ_TORCH_DEVICE = env_str("RGZ_TORCH_DEVICE", "auto")
# CPU threads for training and embedding in a worker (0: torch's default, all cores). bin/start
# leaves one core to the web server so volunteers stay fast while pretraining runs.
RGZ_TORCH_THREADS = env_int("RGZ_TORCH_THREADS", 0, minimum=0)
# How embedding jobs look at each cutout: "dihedral" averages the encoder over 8 rotations/flips
# (orientation-free features, 8x the embedding cost; 6.6 points less error at 145 labels on
# validation folds of the MiraBest training set, 3 encoders, docs/benchmarks.md "Issue 12, third
# day"), "centre" is the paper's single view. An invariant encoder (cpu-p4m) needs one view only.
RGZ_EMBED_VIEWS = env_choice("RGZ_EMBED_VIEWS", "dihedral", ("dihedral", "centre"))
# Jobs split across workers (rgzlabel.learning.chunks): an encoder embedding of more than
# RGZ_EMBED_CHUNK_ROWS sources, an ingest of more than RGZ_INGEST_CHUNK_FILES FITS files, is cut
# into chunks of that size which any worker on the job's queue takes; a failed chunk is retried
# RGZ_CHUNK_RETRIES times before it fails its job.
RGZ_EMBED_CHUNK_ROWS = env_int("RGZ_EMBED_CHUNK_ROWS", 25_600, minimum=256)
RGZ_INGEST_CHUNK_FILES = env_int("RGZ_INGEST_CHUNK_FILES", 1000, minimum=1)
RGZ_CHUNK_RETRIES = env_int("RGZ_CHUNK_RETRIES", 3, minimum=0)
# For the test suite's worker only: lets a job's "fail_chunks_once" parameter fail chunks on purpose.
RGZ_ALLOW_FAULT_INJECTION = env_bool("RGZ_ALLOW_FAULT_INJECTION", False)
# Search by image embeds the uploaded cutout in a worker on the `query` queue (bin/start and docker
# compose run one), so no web process loads torch and the encoder; a search waits this long for it.
RGZ_QUERY_TIMEOUT_S = env_int("RGZ_QUERY_TIMEOUT_S", 30, minimum=1)
# Similarity search is exact (one matrix-vector product over the unit rows) up to this many
# embedded sources; above it the index job builds an approximate index (faiss IVF, see ml.ann).
# 150k x 512 is the largest size whose exact p95 stayed under 50 ms per query on a 2-core machine
# (200k: 52-58 ms; docs/benchmarks.md, "Similarity search past one million"); raise it on faster
# CPUs to keep exact answers longer.
RGZ_EXACT_SEARCH_MAX_ROWS = env_int("RGZ_EXACT_SEARCH_MAX_ROWS", 150_000, minimum=1)
# Largest image a FITS file may declare (pixels); checked before any pixel is read or decompressed,
# so a small file declaring a huge image (or a gzip bomb) fails alone instead of exhausting memory.
RGZ_MAX_IMAGE_PIXELS = env_int("RGZ_MAX_IMAGE_PIXELS", 100_000_000, minimum=22_500)
# Largest file accepted by an upload (ingest page, search by image); larger ones are refused while
# they stream in. Django's own limits: the non-file part of a request, and the size kept in memory.
RGZ_MAX_UPLOAD_BYTES = env_int("RGZ_MAX_UPLOAD_BYTES", 512 * 2**20, minimum=1)
DATA_UPLOAD_MAX_MEMORY_SIZE = 2_621_440
FILE_UPLOAD_MAX_MEMORY_SIZE = 2_621_440
FILE_UPLOAD_HANDLERS = [
    "rgzlabel.catalog.uploads.SizeLimitedUploadHandler",
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "django.core.files.uploadhandler.TemporaryFileUploadHandler",
]
# Server folders that admins may ingest from through the web form (the command line may read anything).
RGZ_INGEST_ROOTS = env_list("RGZ_INGEST_ROOTS", [str(SHARED_DATA_DIR), str(DATA_DIR)])
# The active-learning simulation whose random-sampling curve the dashboard shows (bench.al_simulation).
RGZ_SIMULATION_CURVES = env_str("RGZ_SIMULATION_CURVES", str(BASE_DIR / "docs" / "al_simulation_encoder.json"))
RGZ_CROSSMATCH_RADIUS_ARCSEC = env_float("RGZ_CROSSMATCH_RADIUS_ARCSEC", 10.0, minimum=0.0)
# The default workflow's retirement: a subject retires as soon as one class leads every other by
# RGZ_RETIRE_ON_MARGIN votes (0: never early), and after RGZ_RETIRE_AFTER votes in any case. 2 and 7
# reached the catalogue quality of 5 fixed votes with 1.6-1.8x fewer votes on simulated campaigns
# (docs/benchmarks.md, "Retirement rules").
RGZ_RETIRE_AFTER = env_int("RGZ_RETIRE_AFTER", 7, minimum=1)
RGZ_RETIRE_ON_MARGIN = env_int("RGZ_RETIRE_ON_MARGIN", 2, minimum=0)
# Volunteers may start labelling before signing up (their votes stay theirs when they do).
RGZ_ALLOW_GUESTS = env_bool("RGZ_ALLOW_GUESTS", True)
# Votes one volunteer may cast per minute (0: no limit); stops scripted spam.
RGZ_VOTES_PER_MINUTE = env_int("RGZ_VOTES_PER_MINUTE", 60, minimum=0)
# Accounts (guests and sign-ups) one client address may create per hour (0: no limit); a
# classroom behind one address needs room, a script making voters does not get it.
RGZ_ACCOUNTS_PER_CLIENT_PER_HOUR = env_int("RGZ_ACCOUNTS_PER_CLIENT_PER_HOUR", 30, minimum=0)
# Failed log-ins (page, admin and API token) allowed per account and per client address in
# each window of RGZ_LOGIN_WINDOW_S seconds; further attempts are refused until it ends (0: no limit).
RGZ_LOGIN_FAILURES_PER_ACCOUNT = env_int("RGZ_LOGIN_FAILURES_PER_ACCOUNT", 10, minimum=0)
RGZ_LOGIN_FAILURES_PER_CLIENT = env_int("RGZ_LOGIN_FAILURES_PER_CLIENT", 50, minimum=0)
RGZ_LOGIN_WINDOW_S = env_int("RGZ_LOGIN_WINDOW_S", 900, minimum=1)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("RGZ_LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # Django's own default config gives "django" a console handler too; with the root's,
        # every request warning would be printed twice. One handler: the root's.
        "django": {"handlers": [], "level": "INFO", "propagate": True},
        # kombu warns "No hostname was supplied" for the file-system transport, which has none.
        "kombu.connection": {"level": "ERROR" if CELERY_BROKER_URL == "filesystem://" else "WARNING"},
    },
}
