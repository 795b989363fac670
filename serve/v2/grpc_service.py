"""The servicer function Ray Serve's gRPC proxy registers: Clarifai's ``add_V2Servicer_to_server``, after
making clarifai_grpc's messages picklable by reference.

clarifai_grpc builds its message classes under the module name ``proto.clarifai.api.service_pb2`` (its
``.proto`` path), which is not importable; the proxy pickles each request to send it to the replica, and
pickle looks the class up by that name. Importing this module (the proxy does, as a servicer function; the
gateway does, through ``serve/v2/grpc.py``) registers those names as aliases of the real modules. Kept light:
the proxy imports nothing else of deeptrain.
"""

from __future__ import annotations

import sys
import types

from clarifai_grpc.grpc.api import resources_pb2, service_pb2
from clarifai_grpc.grpc.api import service_pb2_grpc
from clarifai_grpc.grpc.api.status import status_code_pb2, status_pb2

SERVICER = "serve.v2.grpc_service.add_V2Servicer_to_server"


def generated_name(module) -> str:
    """The module name a ``*_pb2`` module's classes claim (``proto/clarifai/api/service.proto`` ->
    ``proto.clarifai.api.service_pb2``)."""
    return module.DESCRIPTOR.name.removesuffix(".proto").replace("/", ".") + "_pb2"


def alias_modules() -> None:
    for module in (resources_pb2, service_pb2, status_pb2, status_code_pb2):
        name = generated_name(module)
        parts = name.split(".")
        for k in range(2, len(parts)):  # the (missing) packages between ``proto`` and the module
            sys.modules.setdefault(".".join(parts[:k]), types.ModuleType(".".join(parts[:k])))
        sys.modules.setdefault(name, module)


alias_modules()


def add_V2Servicer_to_server(servicer, server) -> None:  # noqa: N802 - the name Ray Serve's option refers to
    service_pb2_grpc.add_V2Servicer_to_server(servicer, server)
