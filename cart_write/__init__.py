"""Cartstream write API: HTTP commands in, acknowledged events on `cart-events` out."""
