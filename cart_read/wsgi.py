"""WSGI entry point for granian: `cart_read.wsgi:app` (connections open lazily per worker)."""

from cart_read.app import create_app

app = create_app()
