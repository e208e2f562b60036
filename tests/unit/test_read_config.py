"""Read API configuration from the environment (pure, no I/O)."""

from __future__ import annotations

import pytest

from cart_read.config import Config


def test_defaults_are_the_local_stack() -> None:
    c = Config.from_env({})
    assert (c.host, c.port, c.workers, c.threads) == ("127.0.0.1", 7000, 2, 8)
    assert c.redis_url == "redis://127.0.0.1:6379/0"
    assert c.database_url == "postgresql://cartstream@127.0.0.1:5432/cartstream"
    assert c.notify_channel == "cartstream:cart-updated"
    # Waiters leave two of the eight threads to plain reads.
    assert c.max_waiters == 6
    assert (c.wait_default_ms, c.wait_max_ms) == (5000, 30000)
    assert (c.switch_interval_us, c.shutdown_timeout_s) == (500, 10)


def test_environment_overrides() -> None:
    c = Config.from_env({
        "READ_HOST": "0.0.0.0", "READ_PORT": "7100", "READ_WORKERS": "3", "READ_THREADS": "4",
        "REDIS_URL": "redis://r:1/2", "DATABASE_URL": "postgresql://x@y/z",
        "READ_WAIT_MAX_MS": "1000", "READ_LOG_LEVEL": "debug",
    })
    assert (c.host, c.port, c.workers, c.threads) == ("0.0.0.0", 7100, 3, 4)
    assert (c.redis_url, c.database_url) == ("redis://r:1/2", "postgresql://x@y/z")
    assert c.max_waiters == 2 and c.wait_max_ms == 1000 and c.log_level == "DEBUG"


def test_redis_names_are_the_connectors_settings() -> None:
    c = Config.from_env({"REDIS_KEY_PREFIX": "t1:", "CART_UPDATES_CHANNEL": "t1:updates"})
    assert (c.redis_key_prefix, c.notify_channel) == ("t1:", "t1:updates")
    assert Config.from_env({}).redis_key_prefix == ""


@pytest.mark.parametrize("env", [
    {"READ_PORT": "x"}, {"READ_THREADS": "0"}, {"READ_LOG_LEVEL": "LOUD"},
    {"READ_PAGE_DEFAULT": "500"}, {"READ_SWITCH_INTERVAL_US": "10"},
    {"READ_SHUTDOWN_TIMEOUT_S": "0"},
])
def test_bad_values_are_refused(env: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        Config.from_env(env)
