"""Sparkplane's offline installer: bundles, preflight, provisioning with ansible-runner."""

__version__ = "0.1.0"
