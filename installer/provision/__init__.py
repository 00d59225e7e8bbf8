"""Laying out an appliance: the ansible-runner driver, install, multi-host install, activation."""
