"""What the remote client's parts share: the transport, URL paths, paging, and reading deeptrain's own record
(``metadata.deeptrain``) out of a Clarifai-shaped answer."""

from __future__ import annotations

from typing import Any, Callable
from urllib.parse import quote

import httpx

from deeptrain.config import Settings
from deeptrain.errors import DeeptrainError, InvalidInput
from deeptrain.remote.transport import Transport

PER_PAGE = 1000  # the server's largest page


def q(value: str) -> str:
    """One path segment (an id), escaped."""
    return quote(str(value), safe="")


def native(obj: dict[str, Any]) -> dict[str, Any]:
    """deeptrain's record inside a rendered resource: ``metadata.deeptrain`` (``data.metadata.deeptrain`` for an
    input or an output, whose message has no ``metadata``)."""
    for holder in (obj.get("metadata"), (obj.get("data") or {}).get("metadata")):
        if isinstance(holder, dict) and isinstance(holder.get("deeptrain"), dict):
            return holder["deeptrain"]
    raise DeeptrainError(f"the server's answer lacks deeptrain's record (metadata.deeptrain) in "
                         f"{str(obj)[:200]}: is DEEPTRAIN_API_URL a deeptrain server of this version?")


def unavailable(name: str, why: str = "") -> Callable[..., Any]:
    """A method of ``Client`` that works only where the store and storage are (or a Ray cluster)."""
    def method(self, *args: Any, **kwargs: Any) -> Any:
        raise InvalidInput(f"{name} is not available with DEEPTRAIN_API_URL: run it on the server host"
                           + (f" ({why})" if why else ""))

    method.__name__ = name
    method.__doc__ = f"Not available remotely: ``Client.{name}`` needs the server host{': ' + why if why else ''}."
    return method


class RemoteBase:
    """The server (``settings.api_url``), the key (``settings.api_key``) and the HTTP client."""

    remote = True  # ``Client`` (local) has no such attribute: ``getattr(client, "remote", False)``

    def __init__(self, settings: Settings | None = None, http: httpx.Client | None = None, **overrides: Any):
        self.settings = settings or Settings.from_env(**overrides)
        if not self.settings.api_url:
            raise InvalidInput("a remote client needs DEEPTRAIN_API_URL (the deeptrain server's base URL)")
        self.transport = Transport(self.settings.api_url, self.settings.api_key, http)

    def close(self) -> None:
        self.transport.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RemoteClient({self.transport.url!r})"

    # --- paths and calls ---------------------------------------------------------------------------------
    @staticmethod
    def _app(app_id: str, tail: str = "") -> str:
        """An app's route in the long form (works with a user key and with a key of that app)."""
        return f"/v2/users/me/apps/{q(app_id)}{tail}"

    def _get(self, path: str, **params: Any) -> dict[str, Any]:
        return self.transport.call("GET", path, params=params)

    def _post(self, path: str, body: dict[str, Any] | None = None, **options: Any) -> dict[str, Any]:
        return self.transport.call("POST", path, body=body or {}, **options)

    def _delete(self, path: str, body: dict[str, Any] | None = None, **params: Any) -> dict[str, Any]:
        return self.transport.call("DELETE", path, body=body, params=params)

    def _all(self, path: str, field: str, **params: Any) -> list[dict[str, Any]]:
        """Every item of a paged list (``field`` of each page), page by page."""
        items: list[dict[str, Any]] = []
        page = 1
        while True:
            rows = self._get(path, page=page, per_page=PER_PAGE, **params).get(field) or []
            items += rows
            if len(rows) < PER_PAGE:
                return items
            page += 1

    def _natives(self, path: str, field: str, **params: Any) -> list[dict[str, Any]]:
        return [native(item) for item in self._all(path, field, **params)]
