"""Skip markers for tests that need the real services `make test` provides.

The quick SQLite pass (`make test-fast`) runs without PostgreSQL and Redis and skips them.
"""

import pytest
from django.conf import settings

needs_postgres = pytest.mark.skipif(
    settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql",
    reason="needs PostgreSQL (make test); the SQLite pass skips it",
)
needs_redis = pytest.mark.skipif(
    not settings.REDIS_URL, reason="needs Redis (make test); the SQLite pass skips it"
)
