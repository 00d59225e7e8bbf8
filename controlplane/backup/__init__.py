"""Backup and restore of a control plane: database, pepper and audit keys in one file."""
