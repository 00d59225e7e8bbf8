"""Exceptions other packages catch."""

from controlplane.core.errors import DomainError


class AuditUnavailable(DomainError):
    """The audit store cannot be written; callers must refuse the action (HTTP 503). The
    message is for the log: callers are told only that the audit store cannot be written."""

    status = 503
    code = "audit_unavailable"
