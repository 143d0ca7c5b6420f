"""Which spend store backs the ledger: the one place that knows every backend.

``spend`` holds the store contract and the in-process and SQLite stores;
``spend_redis`` builds on it. Choosing among them lives here, so neither
store module imports the other's dependants.
"""

from __future__ import annotations

from .spend import MemoryStore, SpendStore, SqliteStore


def open_store(backend: str, *, path: str | None = None, url: str | None = None, tz: str = "UTC",
               stale_s: float = 3600.0) -> SpendStore:
    """The configured backend (the config was validated, so the names are known)."""
    if backend == "memory":
        return MemoryStore(tz, stale_s)
    if backend == "sqlite":
        assert path is not None
        return SqliteStore(path, tz, stale_s)
    if backend == "redis":
        from .spend_redis import RedisStore  # the redis client loads only when configured

        assert url is not None
        return RedisStore(url, tz, stale_s)
    raise ValueError(f"unknown ledger backend '{backend}'")
