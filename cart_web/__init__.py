"""HTTP plumbing shared by the write and read APIs: the JSON error shape and its OpenAPI pieces,
authentication and browser safety (secure profile), granian.

Imports nothing from the services (like `cart_contract`), so either API can use it alone.
"""
