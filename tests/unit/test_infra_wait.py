"""infra.topics.wait_for_broker: asks for metadata until the broker answers or time is up."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaException

from infra import topics


class FlakyAdmin:
    failures = 0

    def __init__(self, settings: dict[str, Any]) -> None:
        self.calls = 0

    def list_topics(self, timeout: float) -> object:
        self.calls += 1
        if self.calls <= FlakyAdmin.failures:
            raise KafkaException("Failed to get metadata: Local: Broker transport failure")
        return object()


def test_a_broker_that_answers_late_is_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(topics, "AdminClient", FlakyAdmin)
    FlakyAdmin.failures = 1  # costs one real wait of at most 0.5 s
    admin = topics.wait_for_broker("k:1", 60)
    assert admin.calls == 2  # type: ignore[attr-defined]


def test_a_broker_that_never_answers_is_a_timeout_naming_the_last_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(topics, "AdminClient", FlakyAdmin)
    FlakyAdmin.failures = 10**9
    with pytest.raises(TimeoutError, match="k:1 did not answer within 0s: .*transport failure"):
        topics.wait_for_broker("k:1", 0.01)
