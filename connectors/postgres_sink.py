"""`python -m connectors.postgres_sink`: run the postgres sink."""

from connectors._main import main

if __name__ == "__main__":
    main("postgres")
