"""`python -m cartstream …`: the same as the `cartstream` console script."""

from cartstream.cli import main

main()
