"""What both Redis stores share: a redis-py client made at first use (no network I/O in a
constructor), their Lua scripts registered on it, and redis-py's errors wrapped where they
enter: ``StoreUnavailable`` for a server that does not answer, ``CheckpointError`` for one that
refuses."""

from __future__ import annotations

import re
from typing import Any, ClassVar, Self

import redis

from stream_learner.config import Settings
from stream_learner.errors import CheckpointError, StoreUnavailable


def glob_escape(text: str) -> str:
    r"""``text`` matched literally in a SCAN pattern (a prefix or a model may hold ``*?[]``).

    >>> print(glob_escape("a*b[c]"))
    a\*b\[c\]
    """
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


class RedisClient:
    SCRIPTS: ClassVar[dict[str, str]] = {}  # name -> Lua source, registered with the client

    def __init__(self, url: str, prefix: str = "stream-learner", **client_options: Any) -> None:
        self._url = url
        self._prefix = prefix
        self._options = {"socket_timeout": 10.0, "socket_connect_timeout": 5.0, **client_options}
        self._client: redis.Redis | None = None
        self._scripts: dict[str, Any] = {}

    @classmethod
    def for_settings(cls, settings: Settings) -> Self:
        """A call may take ``--redis-timeout`` seconds, a connect up to 5 of them."""
        timeout = settings.redis_timeout
        return cls(settings.redis_url, settings.key_prefix, socket_timeout=timeout,
                   socket_connect_timeout=min(timeout, 5.0))

    @property
    def client(self) -> redis.Redis:
        if self._client is None:
            try:
                self._client = redis.Redis.from_url(self._url, **self._options)
            except ValueError as exc:
                raise StoreUnavailable(f"--redis-url: {exc}") from None
            self._scripts = {name: self._client.register_script(source)
                             for name, source in self.SCRIPTS.items()}
        return self._client

    def _call(self, what: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except redis.ConnectionError as exc:
            raise StoreUnavailable(f"Redis unreachable while {what}: {exc}") from None
        except redis.TimeoutError as exc:
            raise StoreUnavailable(f"Redis timed out while {what}: {exc}") from None
        except redis.RedisError as exc:
            raise CheckpointError(f"Redis refused {what}: {type(exc).__name__}: {exc}") from None

    def _script(self, name: str, what: str, keys: list[str], args: list[Any]) -> Any:
        _ = self.client
        return self._call(what, self._scripts[name], keys, args)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
