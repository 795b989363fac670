"""The exceptions every layer raises; the CLI and HTTP API map them to exit codes/statuses."""

from __future__ import annotations


class DeeptrainError(Exception):
    """Base of all user-facing errors: the message says what is wrong and what to fix."""

    code = "error"


class InvalidInput(DeeptrainError, ValueError):
    """Bad input from the user: a bad id, file, parameter or label."""

    code = "invalid_input"


class NotFound(DeeptrainError, LookupError):
    """A resource that does not exist."""

    code = "not_found"


class Conflict(DeeptrainError):
    """The request contradicts existing state (duplicate id, resource in use)."""

    code = "conflict"


class StorageError(DeeptrainError):
    """Object storage is unreachable or misconfigured."""

    code = "storage_error"


class Unauthorized(DeeptrainError):
    """No API key, an unknown one, or a revoked one."""

    code = "unauthorized"


class Forbidden(DeeptrainError):
    """A valid API key without the right to this app or this action."""

    code = "forbidden"


class ClusterError(DeeptrainError):
    """The Ray cluster is unreachable, or refused or lost a job."""

    code = "cluster_error"
