"""Audit trail: hash chain, group-commit writer, signed checkpoints, export and offline verify."""

from controlplane.audit.errors import AuditUnavailable
from controlplane.audit.guards import install_guards
from controlplane.audit.writer import AuditWriter

__all__ = ["AuditUnavailable", "AuditWriter", "install_guards"]
