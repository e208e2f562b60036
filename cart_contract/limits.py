"""Every size and money limit of a cart, defined once.

The contract readers (events, products), the fold, the catalog loader and sink, the read API's
parameters, both OpenAPI documents and the PostgreSQL schema take their bounds from here.

Why these numbers:
- A price has at most two decimals, so every line total (price x qty) and every cart total is a
  whole number of cents: the sum of the lines' totals is the cart's total exactly, in Python,
  in Redis (a string) and in PostgreSQL (`numeric`). A sub-cent price is refused where it enters.
- A line holds at most LINE_QTY_MAX units, the same bound as one command: a line is what one
  command could have ordered, which keeps a line total <= 10^13 and a cart total small enough
  for both stores. An add that would push a line above it, or open a line beyond LINES_MAX,
  is rejected by the fold (CART_LIMIT) and the cart stays as it was.
- CART_TOTAL_MAX follows from the others (no cart can exceed it, so it needs no check of its own):
  2,000,000,000,000,000.00, 16 integer digits. PostgreSQL's money columns are numeric(20, 2)
  (MONEY_SQL, migration 0003), which holds it exactly with room to spare.
- A cart record at its largest (LINES_MAX lines of the longest ids and names, worst-case JSON
  escaping, the rejections kept) is about RECORD_BYTES_MAX; the topic's `max.message.bytes`
  (the broker's default, MESSAGE_BYTES_MAX) is far above it. tests/unit/test_limits.py builds
  that record and checks both numbers.
"""

from __future__ import annotations

from decimal import Decimal

PRICE_MIN = Decimal("0")
PRICE_MAX = Decimal("1000000000.00")
PRICE_DECIMALS = 2
CENT = Decimal("0.01")

QTY_MIN = 1
QTY_MAX = 10_000  # per command (AddItem, RemoveItem)
LINE_QTY_MAX = QTY_MAX  # per line of a cart
LINES_MAX = 200  # distinct products in one cart

CART_QTY_MAX = LINE_QTY_MAX * LINES_MAX
LINE_TOTAL_MAX = PRICE_MAX * LINE_QTY_MAX
CART_TOTAL_MAX = LINE_TOTAL_MAX * LINES_MAX

# PostgreSQL's type for prices and totals; MONEY_INT_DIGITS integer digits.
MONEY_SQL = "numeric(20, 2)"
MONEY_INT_DIGITS = 18
# The read API's amount parameters: integer digits enough for any cart total.
AMOUNT_INT_DIGITS = len(str(int(CART_TOTAL_MAX)))

NAME_MAX = 200  # characters of a product name
STOCK_MAX = 2**31 - 1  # a 32-bit SQL integer

# The broker's default message.max.bytes, which the cart-details topic inherits.
MESSAGE_BYTES_MAX = 1_048_588
# The largest cart-details record: 277,182 bytes measured by tests/unit/test_limits.py, rounded up.
RECORD_BYTES_MAX = 300_000


def price_error(price: Decimal) -> str | None:
    """Why a price is outside the money range, or None when it is a valid price."""
    if not price.is_finite() or price < PRICE_MIN or price > PRICE_MAX:
        return f"price must be a finite number in {PRICE_MIN}..{PRICE_MAX}"
    if price != price.quantize(CENT):
        return f"price must have at most {PRICE_DECIMALS} decimals"
    return None
