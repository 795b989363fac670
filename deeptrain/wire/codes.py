"""Clarifai's numeric status codes (``clarifai.api.status.StatusCode``) as deeptrain uses them, both ways.

The server answers every request with ``status: {code, description, details}`` (``error_status``
turns an exception into its code and HTTP status); the remote client turns a failed answer back
into the same exception (``error_for``). The numbers are Clarifai's: a test compares them with
``clarifai_grpc``'s ``status_code_pb2``. Clarifai has no code of its own for an app, a concept or
a key that does not exist (they answer ``CONN_DOES_NOT_EXIST``), for a key of another app
(``CONN_CREDENTIALS_INVALID``) or for a cancelled training (``JOB_CANCELLED``).
"""

from __future__ import annotations

from deeptrain.errors import (ClusterError, Conflict, DeeptrainError, Forbidden, InvalidInput, NotFound, NotTrained,
                              StorageError, Unauthorized)

SUCCESS = 10000
MIXED_STATUS = 10010
FAILURE = 10020
NOT_IMPLEMENTED = 10040
ACCEPTED = 10070
CONN_CREDENTIALS_INVALID = 11002
CONN_INSUFFICIENT_SCOPES = 11007
CONN_KEY_INVALID = 11008
CONN_KEY_NOT_FOUND = 11009
CONN_BAD_REQUEST_FORMAT = 11100
CONN_DOES_NOT_EXIST = 11101
CONN_INVALID_REQUEST = 11102
CONN_METHOD_NOT_ALLOWED = 11103
MODEL_TRAINED = 21100
MODEL_TRAINING = 21101
MODEL_UNTRAINED = 21102
MODEL_QUEUED_FOR_TRAINING = 21103
MODEL_TRAINING_FAILED = 21106
MODEL_DOES_NOT_EXIST = 21200
MODEL_EVALUATED = 21300
MODEL_NOT_EVALUATED = 21302
MODEL_INVALID_ARGUMENT = 21202
WORKFLOW_DOES_NOT_EXIST = 22102
WORKFLOW_INVALID_ARGUMENT = 22104
ANNOTATION_SUCCESS = 24150
ANNOTATION_INVALID_ARGUMENT = 24155
INPUT_DOWNLOAD_SUCCESS = 30000
INPUT_DOWNLOAD_FAILED = 30002
INPUT_DUPLICATE = 30100
INPUT_UNSUPPORTED_FORMAT = 30101
INPUT_DOES_NOT_EXIST = 30102
INPUT_INVALID_ARGUMENT = 30104
INPUT_OVER_LIMIT = 30105
PREDICT_INVALID_REQUEST = 40001
SEARCH_INVALID_REQUEST = 40002
CONCEPTS_INVALID_REQUEST = 40003
RPC_SERVER_UNAVAILABLE = 40031
RPC_REQUEST_TIMEOUT = 40032
RPC_MAX_MESSAGE_SIZE_EXCEEDED = 40033
CLUSTER_INTERNAL_FAILURE = 43040
DATASET_VERSION_READY = 64015
JOB_CANCELLED = 64004
INTERNAL_SERVER_ISSUE = 98004
INTERNAL_FETCHING_ISSUE = 98005

# a model version's training status as Clarifai's ModelVersion.status.code
VERSION_STATUS_CODE = {"queued": MODEL_QUEUED_FOR_TRAINING, "training": MODEL_TRAINING, "trained": MODEL_TRAINED,
                       "failed": MODEL_TRAINING_FAILED, "cancelled": JOB_CANCELLED, "untrained": MODEL_UNTRAINED}

# the code of an invalid argument, and of a missing resource, by the family of the route (see ``family_of``)
INVALID_BY_FAMILY = {"model": MODEL_INVALID_ARGUMENT, "input": INPUT_INVALID_ARGUMENT,
                     "annotation": ANNOTATION_INVALID_ARGUMENT, "predict": PREDICT_INVALID_REQUEST,
                     "search": SEARCH_INVALID_REQUEST, "concept": CONCEPTS_INVALID_REQUEST,
                     "workflow": WORKFLOW_INVALID_ARGUMENT}
NOT_FOUND_BY_RESOURCE = {"model": MODEL_DOES_NOT_EXIST, "model_version": MODEL_DOES_NOT_EXIST,
                         "input": INPUT_DOES_NOT_EXIST, "workflow": WORKFLOW_DOES_NOT_EXIST}
UNAUTHORIZED_BY_REASON = {"missing": CONN_KEY_NOT_FOUND, "malformed": CONN_KEY_NOT_FOUND,
                          "invalid": CONN_KEY_INVALID}
FORBIDDEN_BY_REASON = {"other_app": CONN_CREDENTIALS_INVALID, "scope": CONN_INSUFFICIENT_SCOPES,
                       "user_key": CONN_INSUFFICIENT_SCOPES, "app_key": CONN_INVALID_REQUEST}

_FAMILY_SEGMENTS = (("searches", "search"), ("outputs", "predict"), ("results", "workflow"),
                    ("annotations", "annotation"), ("datasets", "dataset"), ("versions", "model"), ("models", "model"),
                    ("inputs", "input"), ("concepts", "concept"), ("workflows", "workflow"))


def family_of(path: str) -> str | None:
    """The route family of a URL path, which decides the code of an invalid argument: the most specific
    resource word in it (``…/models/m/versions/v/outputs`` is ``predict``, ``…/inputs/searches`` ``search``)."""
    segments = set(path.strip("/").split("/"))
    return next((family for word, family in _FAMILY_SEGMENTS if word in segments), None)


def invalid_body_code(path: str, broken_json: bool = False) -> int:
    """The code of a request body the route cannot take: not JSON at all is a bad request format; JSON of the
    wrong shape (a missing or out-of-range field) is an invalid argument of the route's family."""
    return CONN_BAD_REQUEST_FORMAT if broken_json else INVALID_BY_FAMILY.get(family_of(path) or "",
                                                                             CONN_BAD_REQUEST_FORMAT)


def error_status(exc: BaseException, path: str = "") -> tuple[int, int]:
    """(Clarifai code, HTTP status) of an exception raised while serving ``path``."""
    if isinstance(exc, Unauthorized):
        return UNAUTHORIZED_BY_REASON.get(exc.reason, CONN_KEY_INVALID), 401
    if isinstance(exc, Forbidden):
        code = FORBIDDEN_BY_REASON.get(exc.reason, CONN_INSUFFICIENT_SCOPES)
        return code, 400 if code == CONN_INVALID_REQUEST else 403
    if isinstance(exc, NotFound):
        return NOT_FOUND_BY_RESOURCE.get(exc.resource or "", CONN_DOES_NOT_EXIST), 404
    if isinstance(exc, NotTrained):
        return VERSION_STATUS_CODE.get(exc.status, MODEL_UNTRAINED), 409
    if isinstance(exc, (InvalidInput, Conflict)):
        return INVALID_BY_FAMILY.get(family_of(path) or "", CONN_INVALID_REQUEST), 409 if isinstance(exc, Conflict) else 400
    if isinstance(exc, StorageError):
        return INTERNAL_FETCHING_ISSUE, 502
    if isinstance(exc, ClusterError):
        return CLUSTER_INTERNAL_FAILURE, 503
    if isinstance(exc, DeeptrainError):
        return CONN_INVALID_REQUEST, 400
    return INTERNAL_SERVER_ISSUE, 500


_BY_HTTP = {400: InvalidInput, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict, 413: InvalidInput,
            501: InvalidInput, 502: StorageError, 503: ClusterError}


def error_for(code: int, http_status: int, description: str) -> DeeptrainError:
    """The exception a remote client raises for a failed answer (the inverse of ``error_status``)."""
    if code in VERSION_STATUS_CODE.values() and http_status == 409:
        status = next(s for s, c in VERSION_STATUS_CODE.items() if c == code)
        return NotTrained(description, status)
    if http_status == 401:
        reason = next((r for r, c in UNAUTHORIZED_BY_REASON.items() if c == code), "invalid")
        return Unauthorized(description, reason)
    if http_status == 403:
        reason = next((r for r, c in FORBIDDEN_BY_REASON.items() if c == code), "scope")
        return Forbidden(description, reason)
    if http_status == 404:
        resource = next((r for r, c in NOT_FOUND_BY_RESOURCE.items() if c == code), None)
        return NotFound(description, resource)
    return _BY_HTTP.get(http_status, DeeptrainError)(description)
