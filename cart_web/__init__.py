"""HTTP plumbing shared by the write and read APIs: env parsing, the JSON error shape, granian.

Imports nothing from the services (like `cart_contract`), so either API can use it alone.
"""
