"""Remote mode: the SDK (and so the CLI) over a deeptrain server's HTTP API (``DEEPTRAIN_API_URL``).

Never imports ``deeptrain.services`` or ``deeptrain.jobs``: a remote client has no store, storage or cluster
of its own (``tests/test_architecture.py`` checks it).
"""

from deeptrain.remote.client import LOCAL_ONLY, RemoteClient

__all__ = ["LOCAL_ONLY", "RemoteClient"]
