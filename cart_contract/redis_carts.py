"""The cart documents in Redis, written with a compare-and-set on version.

Shared by the redis sink (connectors) and the read API, which re-warms Redis from PostgreSQL
with the same guard, so neither can ever replace a newer cart. It lives here, not in either
service, because the read API must not import the connectors. Nothing here imports redis: the
client is passed in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import orjson

from cart_contract.cart_details import CartDetails, encode_cart_details
from cart_contract.layout import CART_DOC_FIELD as DOC
from cart_contract.layout import CART_VERSION_FIELD as V
from cart_contract.layout import UPDATES_CHANNEL, cart_key

if TYPE_CHECKING:
    import redis

# One cart: write it only if its version (ARGV[1]) is newer than the stored one, then publish
# ARGV[4] on channel ARGV[3] ('' for none).
CART_CAS = f"""
local cur = redis.call('HGET', KEYS[1], '{V}')
if cur and tonumber(cur) >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], '{V}', ARGV[1], '{DOC}', ARGV[2])
if ARGV[3] ~= '' then redis.call('PUBLISH', ARGV[3], ARGV[4]) end
return 1
"""

# The same for every cart of a chunk: KEYS[i] with ARGV[3i-1..3i+1] = version, doc, notification
# and ARGV[1] = channel ('' for none). One call applies a whole chunk: far fewer round trips
# and commands to pack than one call per cart.
CARTS_CAS = f"""
local channel = ARGV[1]
local applied = 0
for i, key in ipairs(KEYS) do
  local j = 3 * i - 1
  local cur = redis.call('HGET', key, '{V}')
  if not cur or tonumber(cur) < tonumber(ARGV[j]) then
    redis.call('HSET', key, '{V}', ARGV[j], '{DOC}', ARGV[j + 1])
    if channel ~= '' then redis.call('PUBLISH', channel, ARGV[j + 2]) end
    applied = applied + 1
  end
end
return applied
"""

_CHUNK = 500  # carts per script call: keeps each call short for the readers waiting behind it


def notification(cart: CartDetails) -> bytes:
    """The pub/sub message announcing a stored cart version (the read API's waiters parse it)."""
    # The customer's version and last event: they advance even while the cart shown is a
    # frozen order, and they are what a minOffset waiter waits for.
    event = cart.customer_event
    return orjson.dumps({"customerId": cart.customer_id, "version": cart.customer_version,
                         "partition": event.partition, "offset": event.offset})


def _newest_per_customer(
        docs: Sequence[tuple[CartDetails, bytes]]) -> list[tuple[CartDetails, bytes]]:
    best: dict[str, tuple[CartDetails, bytes]] = {}
    for d in docs:
        kept = best.get(d[0].customer_id)
        if kept is None or d[0].customer_version > kept[0].customer_version:
            best[d[0].customer_id] = d
    return list(best.values())


class RedisCarts:
    """The cart documents in Redis (`cart:{customerId}` = {v, doc}), guarded by the customer's
    version (`CartDetails.customer_version`)."""

    def __init__(self, client: redis.Redis, channel: str = UPDATES_CHANNEL,
                 prefix: str = "") -> None:
        self.client, self.channel, self.prefix = client, channel, prefix
        self._cas = client.register_script(CART_CAS)
        self._cas_many = client.register_script(CARTS_CAS)

    def put_many(self, carts: Sequence[CartDetails], notify: bool = True) -> int:
        """Write each cart whose version is newer, one script call each; return how many."""
        channel = self.channel if notify else ""
        pipe = self.client.pipeline(transaction=False)
        for c in carts:
            self._cas(keys=[cart_key(c.customer_id, self.prefix)],
                      args=[c.customer_version, encode_cart_details(c), channel,
                            notification(c) if notify else b""], client=pipe)
        return sum(int(n) for n in pipe.execute())

    def put_docs(self, docs: Sequence[tuple[CartDetails, bytes]], notify: bool = True) -> int:
        """Like put_many, with each cart's document bytes given (the record's own value)."""
        docs = _newest_per_customer(docs)
        if not docs:
            return 0
        channel = self.channel if notify else ""
        pipe = self.client.pipeline(transaction=False)
        for start in range(0, len(docs), _CHUNK):
            chunk = docs[start:start + _CHUNK]
            keys = [cart_key(c.customer_id, self.prefix) for c, _ in chunk]
            args: list[bytes | str | int] = [channel]
            for c, doc in chunk:
                args += (c.customer_version, doc, notification(c) if notify else b"")
            self._cas_many(keys=keys, args=args, client=pipe)
        return sum(int(n) for n in pipe.execute())
