"""``stream-learner`` as a real process, for the bench, the demo and the integration tests.

The service reads its settings from STREAM_LEARNER_* variables, so a child process is
configured entirely through its environment; these helpers build that environment, start
``python -m stream_learner.cli <command>`` from the repository root, and stop it again.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Collection, Mapping
from os import environ
from pathlib import Path
from typing import Literal, overload

from stream_learner.config import ENV_PREFIX, Settings, env_var
from tools import localstack
from tools.localstack import ROOT


def service_env(settings: Settings | Mapping[str, object], omit: Collection[str] = ()) -> dict[str, str]:
    """This process's environment without its STREAM_LEARNER_* variables, and then ``settings``
    (a ``Settings``, every field, or a mapping of field names to values, just those) as
    STREAM_LEARNER_* variables, but the fields in ``omit``: the child sees only what it is given."""
    values = vars(settings) if isinstance(settings, Settings) else settings
    env = {k: v for k, v in environ.items() if not k.startswith(ENV_PREFIX)}
    env.update({env_var(name): json.dumps(list(value)) if isinstance(value, tuple) else str(value)
                for name, value in values.items() if name not in omit})
    return env


@overload
def spawn(command: str, env: Mapping[str, str], *args: str, stdout: Path | int = ...,
          stderr: int = ..., append: bool = ..., text: Literal[False] = ...,
          die_with_parent: bool = ...) -> subprocess.Popen[bytes]: ...


@overload
def spawn(command: str, env: Mapping[str, str], *args: str, stdout: Path | int = ...,
          stderr: int = ..., append: bool = ..., text: Literal[True],
          die_with_parent: bool = ...) -> subprocess.Popen[str]: ...


def spawn(command: str, env: Mapping[str, str], *args: str, stdout: Path | int = subprocess.PIPE,
          stderr: int = subprocess.STDOUT, append: bool = False, text: bool = False,
          die_with_parent: bool = True) -> subprocess.Popen[bytes] | subprocess.Popen[str]:
    """``stream-learner <command> <args>`` as a process of its own, with exactly ``env``.

    ``stdout`` is a ``subprocess`` constant (a pipe by default) or a log file, truncated first
    unless ``append``; ``stderr`` goes with stdout unless told otherwise. With ``text`` the
    pipes carry ``str``. ``die_with_parent`` has the kernel SIGKILL the child when this process
    dies, so that a crashed caller leaves no service behind.
    """
    argv = [sys.executable, "-m", "stream_learner.cli", command, *args]
    preexec = localstack.die_with_parent if die_with_parent else None
    if isinstance(stdout, Path):
        with open(stdout, "ab" if append else "wb") as log:  # the child keeps its own descriptor
            return subprocess.Popen(argv, env=env, cwd=ROOT, stdout=log, stderr=stderr, text=text,
                                    preexec_fn=preexec)
    return subprocess.Popen(argv, env=env, cwd=ROOT, stdout=stdout, stderr=stderr, text=text,
                            preexec_fn=preexec)


def stop(proc: subprocess.Popen[bytes] | subprocess.Popen[str], timeout: float = 120) -> None:
    """SIGTERM, the service's clean shutdown, and SIGKILL if it has not exited within ``timeout``
    seconds; either way it is reaped."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
