"""Settings for the test suite: the real settings with a per-run test database."""

import os

_run = os.environ.setdefault("SIRAYA_TEST_RUN", str(os.getpid()))
# Tests keep their generated secrets (and the demo key file) out of the developer's var/;
# child processes (live routers, manage.py) inherit the same folder, hence the same keys.
os.environ.setdefault("SIRAYA_VAR_DIR", f"/tmp/siraya-test-var-{_run}")

from siraya_site.settings import *  # noqa: E402, F403
from siraya_site.settings import DATABASES  # noqa: E402

# Redis keys of this run (and of the live routers it starts) do not collide with another run's.
SIRAYA_REDIS_PREFIX = os.environ.setdefault("SIRAYA_REDIS_PREFIX", f"siraya-test-{_run}:")
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file, not memory: the live router runs in another process and must see the data.
    DATABASES["default"]["TEST"] = {"NAME": f"/tmp/siraya-test-{_run}.sqlite3"}
else:
    # Several test runs may share one PostgreSQL server; each gets its own database.
    DATABASES["default"]["TEST"] = {"NAME": f"test_siraya_{_run}"}

SIRAYA_KEY_CACHE_SECONDS = 0.0
SIRAYA_ROUTE_CACHE_SECONDS = 0.0
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
