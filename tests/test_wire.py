"""Clarifai's status codes as deeptrain uses them: the numbers are Clarifai's, and every error maps to a code
and an HTTP status the remote client maps back to the same exception."""

from __future__ import annotations

import pytest

from deeptrain.errors import (ClusterError, Conflict, Forbidden, InvalidInput, NotFound, NotTrained, StorageError,
                              Unauthorized)
from deeptrain.wire import codes

CODE_NAMES = [name for name in dir(codes) if name.isupper() and isinstance(getattr(codes, name), int)]


@pytest.mark.parametrize("name", CODE_NAMES)
def test_each_code_is_clarifais_number_for_its_name(name):
    from clarifai_grpc.grpc.api.status import status_code_pb2

    assert getattr(status_code_pb2, name) == getattr(codes, name)


ERRORS = [
    (Unauthorized("x", "missing"), "/v2/apps/a/inputs", codes.CONN_KEY_NOT_FOUND, 401),
    (Unauthorized("x"), "/v2/inputs", codes.CONN_KEY_INVALID, 401),
    (Forbidden("x", "other_app"), "/v2/apps/a/models", codes.CONN_CREDENTIALS_INVALID, 403),
    (Forbidden("x"), "/v2/apps/a/models", codes.CONN_INSUFFICIENT_SCOPES, 403),
    (Forbidden("x", "app_key"), "/v2/models", codes.CONN_INVALID_REQUEST, 400),
    (NotFound("x", "app"), "/v2/users/me/apps/a", codes.CONN_DOES_NOT_EXIST, 404),
    (NotFound("x", "model"), "/v2/models/m", codes.MODEL_DOES_NOT_EXIST, 404),
    (NotFound("x", "model_version"), "/v2/models/m/versions/v", codes.MODEL_DOES_NOT_EXIST, 404),
    (NotFound("x", "input"), "/v2/inputs/i", codes.INPUT_DOES_NOT_EXIST, 404),
    (NotFound("x", "workflow"), "/v2/workflows/w/results", codes.WORKFLOW_DOES_NOT_EXIST, 404),
    (NotTrained("x", "training"), "/v2/models/m/outputs", codes.MODEL_TRAINING, 409),
    (NotTrained("x", "queued"), "/v2/models/m/outputs", codes.MODEL_QUEUED_FOR_TRAINING, 409),
    (NotTrained("x", "failed"), "/v2/models/m/outputs", codes.MODEL_TRAINING_FAILED, 409),
    (NotTrained("x", "cancelled"), "/v2/models/m/outputs", codes.JOB_CANCELLED, 409),
    (NotTrained("x"), "/v2/models/m/outputs", codes.MODEL_UNTRAINED, 409),
    (InvalidInput("x"), "/v2/models/m/outputs", codes.PREDICT_INVALID_REQUEST, 400),
    (InvalidInput("x"), "/v2/models/m/versions", codes.MODEL_INVALID_ARGUMENT, 400),
    (InvalidInput("x"), "/v2/users/me/apps/a/inputs", codes.INPUT_INVALID_ARGUMENT, 400),
    (InvalidInput("x"), "/v2/inputs/searches", codes.SEARCH_INVALID_REQUEST, 400),
    (InvalidInput("x"), "/v2/annotations", codes.ANNOTATION_INVALID_ARGUMENT, 400),
    (Conflict("x"), "/v2/concepts", codes.CONCEPTS_INVALID_REQUEST, 409),
    (InvalidInput("x"), "/v2/users/me/apps", codes.CONN_INVALID_REQUEST, 400),
    (StorageError("x"), "/v2/inputs", codes.INTERNAL_FETCHING_ISSUE, 502),
    (ClusterError("x"), "/v2/models/m/versions", codes.CLUSTER_INTERNAL_FAILURE, 503),
    (RuntimeError("x"), "/v2/inputs", codes.INTERNAL_SERVER_ISSUE, 500),
]


@pytest.mark.parametrize(("exc", "path", "code", "http"), ERRORS, ids=[f"{type(e).__name__}-{p}" for e, p, *_ in ERRORS])
def test_an_error_maps_to_its_code_and_back_to_its_kind(exc, path, code, http):
    assert codes.error_status(exc, path) == (code, http)
    if isinstance(exc, RuntimeError):
        return
    back = codes.error_for(code, http, "message")
    # a 400 is the caller's mistake, whatever raised it (a user key on a short path is one)
    assert type(back) is (InvalidInput if http == 400 else type(exc)) and str(back) == "message"
    for attr in ("reason", "resource", "status"):
        if hasattr(exc, attr) and attr != "resource" and http != 400 or attr == "resource" and getattr(exc, "resource", None) in (
                "model", "input", "workflow"):
            assert getattr(back, attr) == getattr(exc, attr), attr


def test_errors_pickle_with_their_details():
    import pickle

    for exc in (NotFound("m", "model"), NotTrained("m", "training"), Forbidden("m", "other_app"), Unauthorized("m")):
        back = pickle.loads(pickle.dumps(exc))
        assert (type(back), str(back), back.__dict__) == (type(exc), str(exc), exc.__dict__)
