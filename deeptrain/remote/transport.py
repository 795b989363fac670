"""HTTP to a deeptrain server: ``Authorization: Key …``, Clarifai's answer envelope read back into deeptrain's
exceptions, retries where a request can safely be sent again.

Every answer carries ``status: {code, description}``; a code other than the ones a call accepts becomes the
exception the server raised (``deeptrain.wire.codes.error_for``: the numeric code and the HTTP status decide
its class, the description is its message), so a remote command fails with the message and exit code it
would have locally. A request that never reached the server (refused or timed-out connection) is retried;
one that may have reached it only when ``retry`` says it is safe to repeat (reads, and imports, which
de-duplicate by content).
"""

from __future__ import annotations

import time
from typing import Any, Iterable

import httpx

from deeptrain.errors import ClusterError, DeeptrainError, NotFound
from deeptrain.wire import codes

RETRY_DELAYS_S = (0.5, 1.0, 2.0, 4.0)  # between attempts; a server restarting gets ~8 s
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)  # the request never reached the server
_MAYBE_SENT = (httpx.ReadError, httpx.ReadTimeout, httpx.WriteError, httpx.WriteTimeout, httpx.RemoteProtocolError)
_UNAVAILABLE = (502, 503, 504)  # a proxy's or Ray Serve's answer while the app (re)starts, not deeptrain's


def base_url(url: str) -> str:
    """The server's root from ``DEEPTRAIN_API_URL`` (a trailing ``/`` or ``/v2`` is dropped)."""
    url = url.strip().rstrip("/")
    url = url[:-3] if url.endswith("/v2") else url
    if not url.startswith(("http://", "https://")):
        from deeptrain.errors import InvalidInput

        raise InvalidInput(f"DEEPTRAIN_API_URL={url!r} is not an http:// or https:// URL")
    return url


class Transport:
    """One server, one key. ``http``: an ``httpx.Client`` to send through instead of a new one (a test's
    in-process ``fastapi.testclient.TestClient``); it is then not closed here."""

    def __init__(self, url: str, key: str | None, http: httpx.Client | None = None, *,
                 timeout_s: float = 600.0, delays: Iterable[float] = RETRY_DELAYS_S):
        self.url = base_url(url)
        self._headers = {"Authorization": f"Key {key}"} if key else {}
        self._own = http is None
        limits = httpx.Limits(max_connections=8, max_keepalive_connections=4)
        self.http = http or httpx.Client(base_url=self.url, timeout=httpx.Timeout(timeout_s, connect=10.0),
                                         limits=limits)
        self.delays = tuple(delays)

    def close(self) -> None:
        if self._own:
            self.http.close()

    # --- requests ----------------------------------------------------------------------------------------
    def call(self, method: str, path: str, *, body: dict[str, Any] | None = None,
             params: dict[str, Any] | None = None, accept: Iterable[int] = (codes.SUCCESS,),
             retry: bool | None = None) -> dict[str, Any]:
        """The answer to ``method path`` (a dict), or the exception its status stands for. ``accept``: the
        status codes that are an answer (a partly refused import is one); ``retry`` (default: for GET) says
        whether the request may be sent again when it may have reached the server."""
        response = self.send(method, path, body=body, params=params, retry=method == "GET" if retry is None else retry)
        return self.answer(response, path, tuple(accept))

    def send(self, method: str, path: str, *, body: dict[str, Any] | None = None,
             params: dict[str, Any] | None = None, retry: bool = False) -> httpx.Response:
        """The raw response, after retries; the server unreachable (or unavailable) to the end: ClusterError."""
        params = {k: v for k, v in (params or {}).items() if v is not None}
        last = "no attempt"
        for attempt, delay in enumerate((*self.delays, None)):
            try:
                response = self.http.request(method, path, json=body, params=params or None, headers=self._headers)
            except _NOT_SENT as exc:
                last = f"{type(exc).__name__}: {exc}"
            except _MAYBE_SENT as exc:
                if not retry:
                    raise ClusterError(f"the deeptrain server at {self.url} did not answer {method} {path} "
                                       f"({type(exc).__name__}: {exc}); it may or may not have done it") from None
                last = f"{type(exc).__name__}: {exc}"
            else:
                if not (retry and response.status_code in _UNAVAILABLE and not _is_envelope(response)):
                    return response
                last = f"HTTP {response.status_code}: {response.text[:200]}"
            if delay is not None:
                time.sleep(delay)
        raise ClusterError(f"cannot reach the deeptrain server at {self.url} (DEEPTRAIN_API_URL) for "
                           f"{method} {path} after {len(self.delays) + 1} attempts: {last}")

    def answer(self, response: httpx.Response, path: str, accept: tuple[int, ...]) -> dict[str, Any]:
        """The envelope's fields when its status code is accepted, else the error it stands for."""
        if not _is_envelope(response):
            text = response.text[:300].strip()
            if response.status_code == 404:
                raise NotFound(f"{self.url}{path} answered 404 without a deeptrain answer: is DEEPTRAIN_API_URL "
                               f"a deeptrain server (of this version)? {text}")
            kind = ClusterError if response.status_code >= 500 else DeeptrainError
            raise kind(f"{self.url}{path} answered HTTP {response.status_code} without a deeptrain answer: {text}")
        doc = response.json()
        status = doc["status"]
        code = int(status.get("code") or 0)
        if code in accept and (response.status_code < 400 or code != codes.SUCCESS):
            return doc
        description = status.get("description") or f"HTTP {response.status_code}, code {code}"
        raise codes.error_for(code, response.status_code, description)

    def get_bytes(self, path: str) -> bytes:
        """A binary answer (an input's image); an error is an envelope like any other."""
        response = self.send("GET", path, retry=True)
        if response.status_code == 200 and not response.headers.get("content-type", "").startswith("application/json"):
            return response.content
        self.answer(response, path, ())
        raise DeeptrainError(f"{self.url}{path} answered JSON where image bytes were expected")


def _is_envelope(response: httpx.Response) -> bool:
    if not response.headers.get("content-type", "").startswith("application/json"):
        return False
    try:
        doc = response.json()
    except ValueError:
        return False
    return isinstance(doc, dict) and isinstance(doc.get("status"), dict) and "code" in doc["status"]
