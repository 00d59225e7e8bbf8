"""The control plane's `sparkplane` sub-commands: serve, tenants, keys, audit, admins."""
