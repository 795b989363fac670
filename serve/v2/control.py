"""The control plane's routers, included into an app in one place: the Serve gateway's (``serve/app.py``)
and, in tests, a plain in-process FastAPI app over the same routes (``control_api``)."""

from __future__ import annotations

from fastapi import FastAPI

from serve.v2 import (routes_annotations, routes_apps, routes_datasets, routes_evaluation, routes_inputs, routes_models,
                      routes_predict, routes_templates, routes_tuning, routes_workflows)

# order matters where paths overlap: a fixed segment before a parameter (/inputs/searches before /inputs/{input_id})
ROUTERS = (routes_apps.router, routes_predict.router, routes_annotations.router, routes_inputs.router,
           routes_datasets.router, routes_tuning.router, routes_evaluation.router, routes_models.router,
           routes_workflows.router, routes_templates.router)


def include_control_plane(api: FastAPI) -> None:
    for router in ROUTERS:
        api.include_router(router)


def control_api(services, max_request_bytes: int | None = None, cluster: bool = False,
                console: bool = False) -> FastAPI:
    """The control plane alone, served in process: what tests of its routes drive over ASGI. Without
    ``cluster`` it has no Ray cluster to start work on (even when this process has joined one): the routes that
    would submit a Ray job answer the cluster error."""
    import dataclasses

    from serve.bodies import install_openapi
    from serve.middleware import BodyLimit, install_error_handlers
    from serve.v2 import catalog
    from serve.v2.state import Services, no_cluster

    assert isinstance(services, Services)
    if not cluster:
        services = dataclasses.replace(services, job_address=no_cluster)
    api = FastAPI(title="deeptrain control plane")
    install_openapi(api)
    install_error_handlers(api)
    include_control_plane(api)
    if console:  # the web console's pages and assets, as the gateway serves them
        from serve import console as web_console

        web_console.install(api)
    catalog.install(api)  # after every route, as in the gateway: Clarifai's other bindings answer 10040
    api.state.services = services
    if max_request_bytes:
        api.add_middleware(BodyLimit, limit=max_request_bytes)
    return api
