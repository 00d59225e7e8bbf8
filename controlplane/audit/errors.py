"""Exceptions other packages catch."""


class AuditUnavailable(RuntimeError):
    """The audit store cannot be written; callers must refuse the action (HTTP 503)."""
