"""The dataflow's stateful steps as plain classes, so tests can drive them without Bytewax.

Order: `sequence` (keyed by customer) numbers each customer's events in log order; ITEM_ADDED
events then go through `ProductJoin` (keyed by product) while the others bypass it; `Resequencer`
(keyed by customer) puts both streams back into sequence order and applies the fold.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from cart_aggregator.fold import CustomerState, apply, to_cart_details
from cart_contract import CartDetails, CartEvent, EventPosition, Product


@dataclass(frozen=True, slots=True)
class Sequenced:
    """A cart event with its per-customer sequence number and, after the join, its product."""

    seq: int
    event: CartEvent
    position: EventPosition
    product: Product | None = None


@dataclass(frozen=True, slots=True)
class ProductUpdate:
    """A catalog record as read: the product, or None for a deletion, at its topic offset."""

    product_id: str
    partition: int
    offset: int
    product: Product | None


def sequence(last: int | None, item: tuple[CartEvent, EventPosition]) -> tuple[int, Sequenced]:
    """Stamp the next sequence number of this customer (state: the last one given)."""
    n = (last or 0) + 1
    return n, Sequenced(n, item[0], item[1])


@dataclass
class JoinState:
    """Per product: the latest catalog entry and the adds waiting for a first one."""

    product: Product | None = None
    seen: bool = False
    offset: tuple[int, int] = (-1, -1)
    pending: list[tuple[datetime, Sequenced]] = field(default_factory=list)


class ProductJoin:
    """Joins adds with the product as of their arrival; adds for an unseen product wait."""

    def __init__(self, wait: timedelta, state: JoinState | None = None,
                 now: datetime | None = None) -> None:
        self.wait = wait
        self.state = state or JoinState()
        if state is not None and state.pending:
            # After a restart the catalog is being re-read: give waiting adds a fresh wait.
            fresh = (now or datetime.now(UTC)) + wait
            state.pending = [(max(d, fresh), s) for d, s in state.pending]

    def on_product(self, update: ProductUpdate) -> list[Sequenced]:
        """Take a catalog record; release the adds that waited for it."""
        st = self.state
        if (update.partition, update.offset) <= st.offset:
            return []  # re-read after a resume: already applied
        st.product, st.seen, st.offset = update.product, True, (update.partition, update.offset)
        released = [replace(s, product=update.product) for _, s in st.pending]
        st.pending = []
        return released

    def on_add(self, item: Sequenced, now: datetime) -> list[Sequenced]:
        """Join an add with the current product, or park it until the product shows up."""
        if self.state.seen:
            return [replace(item, product=self.state.product)]
        self.state.pending.append((now + self.wait, item))
        return []

    def expire(self, now: datetime) -> list[Sequenced]:
        """Release adds whose wait is over, without a product (they will be rejected)."""
        due = [s for d, s in self.state.pending if d <= now]
        self.state.pending = [(d, s) for d, s in self.state.pending if d > now]
        return due

    def next_deadline(self) -> datetime | None:
        """When the earliest waiting add expires."""
        return min((d for d, _ in self.state.pending), default=None)


@dataclass
class ResequenceState:
    """Per customer: the next sequence number to fold, early arrivals, and the cart state."""

    next_seq: int = 1
    early: dict[int, Sequenced] = field(default_factory=dict)
    customer: CustomerState | None = None


def resequence_and_fold(
    state: ResequenceState | None, item: Sequenced
) -> tuple[ResequenceState, list[CartDetails]]:
    """Buffer out-of-order events and fold every event that is next in sequence."""
    st = state or ResequenceState()
    if item.seq < st.next_seq:
        return st, []
    st.early[item.seq] = item
    out: list[CartDetails] = []
    while st.next_seq in st.early:
        s = st.early.pop(st.next_seq)
        st.customer = apply(st.customer, s.event, s.product, s.position)
        out.append(to_cart_details(st.customer))
        st.next_seq += 1
    return st, out
