"""This host and what a bundle needs of it: hardware facts, preflight, the KV-cache plan."""
