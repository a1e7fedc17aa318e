"""One HTTP request to a stream-learner process, for the tests, the bench and the demo."""

from __future__ import annotations

import urllib.error
import urllib.request


def call(url: str, body: bytes | None = None, token: str = "", timeout: float = 10.0) -> tuple[int, bytes]:
    """GET ``url`` (POST ``body`` when given, with ``token`` as a bearer token): the status and
    the body; status 0 when nothing answers."""
    request = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""
