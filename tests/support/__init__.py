"""Helpers shared by the tests (never imported by product code)."""
