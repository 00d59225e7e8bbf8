"""Operator tools: support bundle, TLS certificates, the demo appliance."""
