"""Tenants and their API keys.

Tables (`models`), the database operations (`store`), the audited admin actions that the API,
console and CLI call (`actions`), each tenant's `policy`, and the key cache (`keycache`, `epoch`).
"""
