"""`python -m connectors.redis_sink`: run the redis sink until SIGTERM."""

from connectors.service import main

if __name__ == "__main__":
    main("redis")
