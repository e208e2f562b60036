"""`python -m connectors.redis_sink`: run the redis sink."""

from connectors._main import main

if __name__ == "__main__":
    main("redis")
