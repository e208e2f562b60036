"""`python -m connectors.postgres_sink`: run the postgres sink until SIGTERM."""

from connectors.service import main

if __name__ == "__main__":
    main("postgres")
