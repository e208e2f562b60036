"""`python -m connectors.catalog_sink`: run the catalog sink."""

from connectors._main import main

if __name__ == "__main__":
    main("catalog")
