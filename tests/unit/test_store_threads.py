"""The threads that talk to the store beside the loops survive what the store holds or throws."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from consumers.lease import WriterLease
from consumers.reloader import Reloader
from stream_learner.checkpoint import CheckpointMeta, seal_record
from stream_learner.config import Settings
from stream_learner.engine import ModelState
from stream_learner.errors import CheckpointError, StoreUnavailable
from stream_learner.state.base import Serving
from stream_learner.state.memory import MemoryStore

SETTINGS = Settings(model="m", hmac_key="k")


class Flaky(MemoryStore):
    """The twin, with the faults to throw at the next calls queued in ``faults``."""

    def __init__(self) -> None:
        super().__init__()
        self.faults: list[BaseException] = []
        self.renewals = 0

    def _fault(self) -> None:
        if self.faults:
            raise self.faults.pop(0)

    def served(self, model: str) -> Serving:  # what the predictor's reloader asks
        self._fault()
        return super().served(model)

    def renew(self, model: str, token: int, ttl: float, owner: str = "") -> None:
        self._fault()
        super().renew(model, token, ttl, owner)
        self.renewals += 1


def saved(store: MemoryStore, version: int, token: int) -> None:
    state = ModelState.fresh("linear_model.LogisticRegression()")
    store.save("m", version, seal_record(state, CheckpointMeta("m", version, {}), "k1", b"k"), token, keep=5)


def wait(what: str, condition: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def test_the_reloader_serves_on_through_damaged_keys_outages_and_bugs() -> None:
    store = Flaky()
    token = store.acquire("m", ttl=60)
    assert token is not None
    saved(store, 1, token)
    store.faults = [CheckpointError("latest holds b'abc', not a number"), StoreUnavailable("down"),
                    ValueError("a bug")]
    reloader = Reloader(store, SETTINGS, serving=0)
    reloader.start()
    try:
        ckpt = wait("v1 after the faults", reloader.take)
        assert ckpt.meta.version == 1 and not store.faults
        saved(store, 2, token)
        assert wait("v2", reloader.take).meta.version == 2
    finally:
        reloader.stop()


def test_the_lease_thread_waits_out_an_outage_and_reports_a_damaged_fence() -> None:
    store = Flaky()
    lease = WriterLease(store, "m", ttl=0.3, owner="a")
    with lease:
        assert lease.wait_for(threading.Event())
        store.faults = [StoreUnavailable("down"), StoreUnavailable("down")]
        before = store.renewals
        wait("a renewal after the outage", lambda: not store.faults and store.renewals > before)
        lease.check()
        store.faults = [CheckpointError("fence holds no number")]
        wait("the lease to be lost", lambda: lease.lost is not None)
        with pytest.raises(CheckpointError, match="fence holds no number"):
            lease.check()
    with WriterLease(store, "m", ttl=0.3, owner="b") as other:
        store.faults = [KeyError("a bug")]
        assert other.wait_for(threading.Event())
        wait("the lease to be given up", lambda: other.lost is not None)
        assert "KeyError" in str(other.lost)
