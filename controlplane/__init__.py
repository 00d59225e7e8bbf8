"""Sparkplane's control plane: tenants, keys, admission, OpenAI proxy, audit, console."""

__version__ = "0.1.0"
