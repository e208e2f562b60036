"""Cartstream's command line: `cartstream --help` lists what it runs (cartstream/cli.py)."""
