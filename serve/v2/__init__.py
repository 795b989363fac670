"""The Clarifai-v2-compatible control plane: apps, concepts, inputs, annotations, dataset versions, models,
model versions (training), keys — plain FastAPI routers included into the Serve gateway's app.

Every route is registered in the path forms of ``routing.py`` (``/v2/users/{user_id}/apps/{app_id}/…``,
``/v2/apps/{app_id}/…`` and the short ``/v2/…`` with the app taken from an app key), checks its key and
scope (``access.py``) before it reads the body, and answers Clarifai's envelope (``envelope.py``).
"""
