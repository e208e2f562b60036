"""bytewax's KafkaSource, fixed so that a consumer error never becomes the resume offset.

With `raise_on_errors=False`, bytewax 0.21.1's partition takes the offset of *any* message it
consumed as "read up to here", including a consumer error's (-1001). If a batch ends with an
error, the next snapshot records offset -1000, which is librdkafka's OFFSET_STORED: a resume
from it falls back to `auto.offset.reset` (the end of the topic) and silently skips everything
in between. The wrapper keeps the offset of the last real record instead.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bytewax.connectors.kafka import KafkaSource, KafkaSourceMessage
from bytewax.inputs import StatefulSourcePartition


class _OffsetSafePartition(StatefulSourcePartition[Any, int | None]):
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def next_batch(self) -> list[Any]:
        before = self.inner._offset
        batch = self.inner.next_batch()
        if self.inner._offset != before:
            # Resume after the last real record of the batch, never at an error's offset.
            self.inner._offset = before
            for item in reversed(batch):
                if type(item) is KafkaSourceMessage and item.offset is not None \
                        and item.offset >= 0:
                    self.inner._offset = item.offset + 1
                    break
        return batch

    def next_awake(self) -> datetime | None:
        return self.inner.next_awake()

    def snapshot(self) -> int | None:
        return self.inner.snapshot()

    def close(self) -> None:
        self.inner.close()


class OffsetSafeKafkaSource(KafkaSource):
    """KafkaSource whose partitions never resume from an error's offset (see module doc)."""

    def build_part(self, step_id: str, for_part: str,
                   resume_state: int | None) -> _OffsetSafePartition:
        """bytewax's partition, wrapped."""
        return _OffsetSafePartition(super().build_part(step_id, for_part, resume_state))
