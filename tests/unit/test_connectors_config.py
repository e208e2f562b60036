"""Connectors: configuration from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.config import ROOT, Config


def test_defaults_are_the_local_stack_and_the_store_layout() -> None:
    cfg = Config.from_env({})
    assert cfg == Config()
    assert (cfg.kafka_bootstrap, cfg.redis_url, cfg.database_url) == (
        "localhost:9092", "redis://127.0.0.1:6379/0",
        "postgresql://cartstream@127.0.0.1:5432/cartstream")
    assert (cfg.topic_cart_details, cfg.topic_products, cfg.topic_dead_letter) == (
        "cart-details-event", "product-details-events", "cartstream-dead-letter")
    assert cfg.key_prefix == "" and cfg.updates_channel == "cartstream:cart-updated"
    assert [cfg.group(s) for s in ("redis", "postgres", "catalog")] == [
        "cartstream-redis", "cartstream-postgres", "cartstream-catalog"]
    assert (cfg.batch_max, cfg.batch_wait_s) == (5000, 0.02)
    assert cfg.recovery_dir == ROOT / ".run" / "aggregator" / "recovery"


def test_every_setting_comes_from_its_variable() -> None:
    cfg = Config.from_env({
        "KAFKA_BOOTSTRAP": "k:1", "REDIS_URL": "redis://r/1", "DATABASE_URL": "postgresql://d",
        "TOPIC_CART_DETAILS": "cd", "TOPIC_PRODUCTS": "pr", "TOPIC_DEAD_LETTER": "dl",
        "CONSUMER_GROUP_PREFIX": "g", "REDIS_KEY_PREFIX": "t1:", "CART_UPDATES_CHANNEL": "ch",
        "SINK_BATCH_MAX": "100", "SINK_BATCH_WAIT_MS": "50", "SINK_RETRY_MAX_S": "0.5",
        "RUN_DIR": "/tmp/run",
    })
    assert (cfg.kafka_bootstrap, cfg.redis_url, cfg.database_url) == (
        "k:1", "redis://r/1", "postgresql://d")
    assert (cfg.topic_of("redis"), cfg.topic_of("postgres"), cfg.topic_of("catalog")) == (
        "cd", "cd", "pr")
    assert (cfg.topic_dead_letter, cfg.group("redis"), cfg.key_prefix, cfg.updates_channel) == (
        "dl", "g-redis", "t1:", "ch")
    assert (cfg.batch_max, cfg.batch_wait_s, cfg.retry_max_s) == (100, 0.05, 0.5)
    assert cfg.recovery_dir == Path("/tmp/run/aggregator/recovery")
    assert Config.from_env({"AGG_RECOVERY_DIR": "/x/rec"}).recovery_dir == Path("/x/rec")


@pytest.mark.parametrize("value", ["0", "-5", "many"])
def test_a_bad_batch_size_is_refused(value: str) -> None:
    with pytest.raises(ValueError):
        Config.from_env({"SINK_BATCH_MAX": value})
