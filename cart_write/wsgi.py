"""WSGI entry point for granian: `cart_write.wsgi:app`, configured from the environment."""

from __future__ import annotations

from cart_write.app import create_app

app = create_app()
