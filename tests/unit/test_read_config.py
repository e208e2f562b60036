"""Read API configuration from the environment (pure, no I/O)."""

from __future__ import annotations

import pytest

from cart_read.config import Config


def test_defaults_are_the_local_stack() -> None:
    c = Config.from_env({})
    assert (c.host, c.port, c.workers) == ("127.0.0.1", 7000, 2)
    assert c.redis_url == "redis://127.0.0.1:6379/0"
    assert c.database_url == "postgresql://cartstream@127.0.0.1:5432/cartstream"
    assert c.notify_channel == "cartstream:cart-updated"
    # A high safety cap, not a thread budget: waits and streams are asyncio tasks.
    assert c.max_waiters == 20_000
    assert (c.stream_heartbeat_s, c.stream_retry_ms, c.stream_ticket_ttl_s) == (15.0, 3000, 60)
    assert (c.wait_default_ms, c.wait_max_ms) == (5000, 30000)
    assert (c.switch_interval_us, c.shutdown_timeout_s) == (500, 10)


def test_environment_overrides() -> None:
    c = Config.from_env({
        "READ_HOST": "0.0.0.0", "READ_PORT": "7100", "READ_WORKERS": "3",
        "READ_MAX_WAITERS": "9000",
        "REDIS_URL": "redis://r:1/2", "DATABASE_URL": "postgresql://x@y/z",
        "READ_WAIT_MAX_MS": "1000", "READ_LOG_LEVEL": "debug",
    })
    assert (c.host, c.port, c.workers) == ("0.0.0.0", 7100, 3)
    assert (c.redis_url, c.database_url) == ("redis://r:1/2", "postgresql://x@y/z")
    assert c.max_waiters == 9000 and c.wait_max_ms == 1000 and c.log_level == "DEBUG"


def test_redis_names_are_the_connectors_settings() -> None:
    c = Config.from_env({"REDIS_KEY_PREFIX": "t1:", "CART_UPDATES_CHANNEL": "t1:updates"})
    assert (c.redis_key_prefix, c.notify_channel) == ("t1:", "t1:updates")
    assert Config.from_env({}).redis_key_prefix == ""


@pytest.mark.parametrize("env", [
    {"READ_PORT": "x"}, {"READ_WORKERS": "0"}, {"READ_MAX_WAITERS": "0"},
    {"READ_LOG_LEVEL": "LOUD"},
    {"READ_PAGE_DEFAULT": "500"}, {"READ_SWITCH_INTERVAL_US": "10"},
    {"READ_SHUTDOWN_TIMEOUT_S": "0"},
])
def test_bad_values_are_refused(env: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        Config.from_env(env)
