"""``RemoteClient``: ``deeptrain.sdk.Client`` over a deeptrain server's HTTP API.

``Client()`` is one when ``DEEPTRAIN_API_URL`` is set (``Settings.api_url``), with ``DEEPTRAIN_API_KEY``
as its key: the same methods, the same typed results (``deeptrain.results``, rebuilt from the deeptrain
record each answer carries) and the same exceptions (the answer's Clarifai status code read back by
``deeptrain.wire.codes.error_for``), so scripts and the CLI work unchanged against a server. Local files
(an import's folder, images to predict on) are read here and sent. What needs the server's storage, store
or Ray cluster directly has no route; those methods raise ``InvalidInput`` saying to run them on the
server host (``LOCAL_ONLY``).
"""

from __future__ import annotations

from deeptrain.remote.base import unavailable
from deeptrain.remote.client_data import DataMethods
from deeptrain.remote.client_infer import InferenceMethods
from deeptrain.remote.client_jobs import JobMethods

_STORAGE = "it reads the server's storage"
_JOBS = ("jobs are sent, listed, stopped and streamed on the server host; remotely, `models train` and `tune` run "
         "on its cluster, and get_job / wait_job read a job")
_RESUME_TUNE = ("a run continues from its Tune experiment state in the server's storage, which no route resumes; "
                "remotely, show and promote its runs")
# methods of ``Client`` without a route, and why
LOCAL_ONLY = {
    "export_inputs": "it writes every input of the app (one input's image: get_input_bytes)",
    "open_dataset": _STORAGE, "report": _STORAGE, "tune_report": _STORAGE, "export": _STORAGE,
    "load_version": _STORAGE, "gc": "it collects the server's storage",
    "queue_train": "remotely `train` queues the version and the server trains it at once",
    "resume": "a queued or interrupted version is resumed on the server host",
    "check_resume": "a queued or interrupted version is resumed on the server host",
    "submit_train": _JOBS, "check_submission": _JOBS, "submit_command": _JOBS, "list_jobs": _JOBS,
    "stop_job": _JOBS, "job_logs": _JOBS,
    "check_tune": "it checks a search for `submit tune`; remotely, `tune` has the server check it as it starts it",
    "check_tune_resume": _RESUME_TUNE, "resume_tune": _RESUME_TUNE,
}


class RemoteClient(DataMethods, JobMethods, InferenceMethods):
    """Every ``deeptrain.sdk.Client`` operation the server's API offers, over HTTP.

        client = RemoteClient(Settings.from_env())            # or Client() with DEEPTRAIN_API_URL set
        client.import_inputs("fashion", "images/", format="imagefolder")
        version = client.train("fashion", "clf", {"num_epochs": 3})

    ``http``: an ``httpx.Client`` to send through (a test's in-process ``TestClient``).
    """


for _name, _why in LOCAL_ONLY.items():
    setattr(RemoteClient, _name, unavailable(_name, _why))
