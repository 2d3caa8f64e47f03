"""Create the PostgreSQL database named in DATABASE_URL when the server lacks it.

`make run` calls this before migrating, so pointing DATABASE_URL at a fresh server just works.
SQLite needs nothing (the file is created on first use). Exits non-zero with one line on error.
"""

from __future__ import annotations

import os
import sys

import dj_database_url


def main() -> int:
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        return 0
    import psycopg
    from psycopg import sql

    name = dj_database_url.parse(url)["NAME"]
    try:
        with psycopg.connect(url, dbname="postgres", connect_timeout=5, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                print(f"==> created database {name}")
    except psycopg.Error as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"error: cannot reach PostgreSQL at DATABASE_URL: {first_line}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
