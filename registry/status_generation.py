"""A generation token per application that moves whenever what its status shows may change.

The status endpoint caches each application's rendered status under the generation it read
*before* computing the body, so every write that can change what the status shows must call
`bump(application_ids)`: registry services and the dashboard's model-signal receivers do,
and so does anything that writes with raw SQL or bulk operations (heartbeats, traffic
splits, probe verdicts, feedback rollups).

Why this is never stale:
- `bump` runs after the writer's transaction commits (`transaction.on_commit`), so a reader
  that sees the new generation also sees the committed rows.
- A generation is a fresh random token, written once; it is never restored. A cached body
  is reachable only while the generation it was stored under is still the current one,
  i.e. no bump happened after the body's reader read it, so the body was computed after
  every bump (hence every commit) that precedes the request. An evicted or lost generation
  is replaced by a new random one, which orphans every body stored before.
- If the store cannot be reached, readers do not cache (see dashboard.status_cache) and a
  failed bump is logged; STATUS_CACHE_MAX_AGE_S bounds how long a body lives in any case.

The store is the `shared` cache (settings.CACHES): Redis when REDIS_URL is set, otherwise
a file-based cache under VAR_DIR that every process on the machine shares. Not a
per-process memory cache: a write in a Celery worker must reach every web process.
Dependencies point one way (STYLE R2): feedback and dashboard import this module.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from django.conf import settings
from django.core.cache import BaseCache, caches
from django.db import transaction

log = logging.getLogger(__name__)

CACHE_ALIAS = "shared"
# Generations outlive any body (STATUS_CACHE_MAX_AGE_S); one that expires is simply replaced.
GENERATION_TTL_S = 86_400


def store() -> BaseCache:
    return caches[CACHE_ALIAS]


# --- One round trip per request ---

_MISSING = object()
_prefetched: ContextVar[dict[str, Any] | None] = ContextVar("shared_prefetched", default=None)


@contextmanager
def prefetched(keys: Iterable[str]) -> Iterator[None]:
    """Read `keys` from the store in one round trip for the code inside, where `get_many`
    answers each of them once from that read (a read that merely happened a little earlier,
    which the generation protocol allows: it only ever compares a generation read before)."""
    wanted = list(dict.fromkeys(keys))
    found: dict[str, Any] | None = None
    if wanted:
        try:
            got = store().get_many(wanted)
            found = {k: got.get(k, _MISSING) for k in wanted}
        except Exception:  # each reader meets the outage itself and falls back
            found = None
    reset = _prefetched.set(found)
    try:
        yield
    finally:
        _prefetched.reset(reset)


def get_many(keys: list[str]) -> dict[str, Any]:
    """store().get_many, answered from `prefetched` when it read every key (once each)."""
    ready = _prefetched.get()
    if ready is not None and all(k in ready for k in keys):
        values = [ready.pop(k) for k in keys]
        return {k: v for k, v in zip(keys, values, strict=True) if v is not _MISSING}
    return store().get_many(keys)


def key_prefix() -> str:
    """Namespace of every status key; tests give each test its own."""
    return getattr(settings, "STATUS_CACHE_KEY_PREFIX", "status")


def generation_key(application_id: int) -> str:
    return f"{key_prefix()}:gen:{application_id}"


def _new_token() -> str:
    return secrets.token_hex(8)


def bump(application_ids: Iterable[int | None]) -> None:
    """Give these applications a new generation after the current transaction commits.

    Outside a transaction it happens at once: call it after the write. Call it from every
    write path that changes what an application's status shows and does not go through
    Model.save()/delete() (the dashboard's receivers cover those).
    """
    bump_keys(generation_key(int(i)) for i in application_ids if i is not None)


def bump_now(application_ids: Iterable[int]) -> None:
    """Set new generations immediately (`bump` is what writers call)."""
    replace_now({generation_key(i) for i in application_ids})


def current(application_id: int) -> str:
    """The application's generation now, creating one if it has none (or it was evicted).

    Raises if the store is unreachable: the caller must then not cache.
    """
    return read_or_create(generation_key(application_id))


# --- The same protocol for any generation key (API tokens use one too) ---


def bump_keys(keys: Iterable[str]) -> None:
    """New tokens for these generation keys, now and again after the current transaction
    commits (at once only, outside a transaction)."""
    wanted = set(keys)
    if not wanted:
        return
    replace_now(wanted)
    if transaction.get_connection().in_atomic_block:
        # the bump now serves reads later in this same transaction (and tests, which never
        # commit); a reader that caches the pre-commit past under it is orphaned by this one
        transaction.on_commit(lambda: replace_now(wanted))


def replace_now(keys: Iterable[str]) -> None:
    tokens = {key: _new_token() for key in keys}
    if not tokens:
        return
    try:
        store().set_many(tokens, timeout=GENERATION_TTL_S)
    except Exception:  # the write is committed; do not turn it into an error for the caller
        log.exception("generation bump failed for %s", sorted(tokens))


def read_or_create(key: str, value: str | None = None) -> str:
    """The token under `key` (`value` if the caller already read it), creating it if missing."""
    cache = store()
    token = value if value is not None else cache.get(key)
    if token is None:
        # add() keeps a concurrent bump's token; re-read whichever token won
        cache.add(key, _new_token(), timeout=GENERATION_TTL_S)
        token = cache.get(key)
    if token is None:
        raise RuntimeError("generation store dropped a key just written")
    return token
