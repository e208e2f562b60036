"""ASGI entry point for granian: `cart_read.asgi:app` (connections open lazily per worker)."""

from __future__ import annotations

import sys

from cart_read.app import create_app
from cart_read.config import Config

config = Config.from_env()
# Process-wide, so set here in each worker, not in create_app (tests build many apps).
sys.setswitchinterval(config.switch_interval_us / 1_000_000)
app = create_app(config)
