"""The exceptions every layer raises; the CLI and HTTP API map them to exit codes/statuses."""

from __future__ import annotations


class DeeptrainError(Exception):
    """Base of all user-facing errors: the message says what is wrong and what to fix."""

    code = "error"


class InvalidInput(DeeptrainError, ValueError):
    """Bad input from the user: a bad id, file, parameter or label."""

    code = "invalid_input"


class NotFound(DeeptrainError, LookupError):
    """A resource that does not exist; ``resource`` names its kind (``app``, ``model``, ``model_version``,
    ``input``, ``workflow``, ...) so that the HTTP API can answer Clarifai's code for it."""

    code = "not_found"

    def __init__(self, message: str, resource: str | None = None):
        super().__init__(message)
        self.resource = resource

    def __reduce__(self):  # pickled across Ray with its resource
        return type(self), (str(self), self.resource)


class Conflict(DeeptrainError):
    """The request contradicts existing state (duplicate id, resource in use)."""

    code = "conflict"


class NotTrained(Conflict):
    """A model version asked for what only a trained one has (a prediction): ``status`` is where it is
    (``queued``, ``training``, ``failed``, ``cancelled``; ``untrained`` when the model has no version)."""

    code = "not_trained"

    def __init__(self, message: str, status: str = "untrained"):
        super().__init__(message)
        self.status = status

    def __reduce__(self):
        return type(self), (str(self), self.status)


class StorageError(DeeptrainError):
    """Object storage is unreachable or misconfigured."""

    code = "storage_error"


class Unauthorized(DeeptrainError):
    """No API key (``reason`` ``missing``/``malformed``), an unknown one or a revoked one (``invalid``)."""

    code = "unauthorized"

    def __init__(self, message: str, reason: str = "invalid"):
        super().__init__(message)
        self.reason = reason

    def __reduce__(self):
        return type(self), (str(self), self.reason)


class Forbidden(DeeptrainError):
    """A valid API key without the right to this app (``reason`` ``other_app``), this action (``scope``),
    or an app key where a user key is needed (``user_key``)."""

    code = "forbidden"

    def __init__(self, message: str, reason: str = "scope"):
        super().__init__(message)
        self.reason = reason

    def __reduce__(self):
        return type(self), (str(self), self.reason)


class ClusterError(DeeptrainError):
    """The Ray cluster is unreachable, or refused or lost a job."""

    code = "cluster_error"
