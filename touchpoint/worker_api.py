"""The worker's HTTP API as commands and tests call it: its address and the caller's token.

Everything on a worker's web server that reveals customer data, table state or runs a
query needs an API token (``streams/ops/access.py``); this sends ``TOUCHPOINT_API_TOKEN``
(by default the local one in ``$HOME/api_token``) in the ``Authorization`` header, never
in the URL.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from touchpoint.settings import Settings

__all__ = ["WorkerAPI", "WorkerRefused", "WorkerUnreachable"]


class WorkerUnreachable(OSError):
    """No worker answers at the configured address."""


class WorkerRefused(Exception):
    """The worker answered with an error status; ``status`` and its ``error`` text."""

    def __init__(self, status: int, error: str) -> None:
        super().__init__(error)
        self.status = status


class WorkerAPI:
    """Calls to one worker's web server (``TOUCHPOINT_WEB_HOST``/``_PORT``) with the token."""

    def __init__(self, settings: Settings, *, port: int | None = None) -> None:
        host = settings.web_host if settings.web_host not in {"0.0.0.0", "::"} else "127.0.0.1"
        self.base = f"http://{host}:{port or settings.web_port}"
        self._token = settings.api_token

    def url(self, path: str) -> str:
        """The full URL of ``path`` on this worker."""
        return self.base + path

    def path_of(self, prefix: str, value: str) -> str:
        """``prefix`` followed by ``value`` quoted as one path segment."""
        return prefix + urllib.parse.quote(value, safe="")

    def call(self, path: str, *, data: bytes | None = None, timeout: float = 30.0,
             content_type: str = "text/plain") -> Any:
        """GET (or POST ``data`` to) ``path``; the decoded JSON answer.

        Raises :class:`WorkerRefused` for an error status (with the worker's ``error``
        text) and :class:`WorkerUnreachable` when nothing answers.
        """
        headers = {"Authorization": f"Bearer {self._token}"}
        if data is not None:
            headers["Content-Type"] = content_type
        request = urllib.request.Request(self.url(path), data=data, headers=headers,
                                         method="POST" if data is not None else "GET")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.load(response)
        except urllib.error.HTTPError as exc:
            try:
                error = json.loads(exc.read() or b"{}").get("error") or exc.reason
            except (ValueError, AttributeError):
                error = exc.reason
            raise WorkerRefused(exc.code, str(error)) from None
        except (urllib.error.URLError, OSError) as exc:
            raise WorkerUnreachable(f"no worker answers at {self.base} ({exc})") from None

    def status(self, timeout: float = 2.0) -> dict[str, Any] | None:
        """The worker's ``/status``, or ``None`` while it does not answer."""
        try:
            found = self.call("/status", timeout=timeout)
        except WorkerUnreachable:
            return None
        return found if isinstance(found, dict) else None
