"""`python -m connectors.catalog_sink`: run the catalog sink until SIGTERM."""

from connectors.service import main

if __name__ == "__main__":
    main("catalog")
