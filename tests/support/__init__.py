"""Helpers shared by the tests and the bench; never imported by the product packages."""
