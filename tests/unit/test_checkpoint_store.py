"""Signed checkpoints and the store's rules, on the in-memory twin."""

from __future__ import annotations

import json
import os
import pickle
import time
from pathlib import Path
from typing import Any

import pytest

from stream_learner.checkpoint import (
    CheckpointMeta,
    Record,
    open_record,
    pickle_state,
    seal_payload,
    seal_record,
)
from stream_learner.engine import ModelState
from stream_learner.errors import CheckpointError, FencedError, IntegrityError, NoCheckpoint
from stream_learner.state.memory import MemoryStore

KEYS = {"k1": b"right"}


def sealed(version: int = 1) -> Record:
    state = ModelState.fresh("linear_model.LogisticRegression()")
    return seal_record(state, CheckpointMeta("m", version, {"events:0": 5}), "k1", KEYS["k1"])


class _Marker:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


def test_a_model_that_does_not_pickle_is_a_checkpoint_error_naming_the_version() -> None:
    state = ModelState.fresh("linear_model.LogisticRegression()")
    state.model.unpicklable = lambda: None
    with pytest.raises(CheckpointError, match=r"checkpoint m v3: the model does not pickle: "):
        seal_record(state, CheckpointMeta("m", 3, {}), "k1", KEYS["k1"])


def test_a_capped_snapshot_takes_numpy_arrays_whole_or_not_at_all() -> None:
    import numpy as np  # River's own dependency; protocol 5 hands its arrays over as buffers

    state = ModelState.fresh("linear_model.LogisticRegression()")
    state.model.table = np.arange(200_000, dtype=np.float64).reshape(400, 500)
    whole = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
    assert pickle_state(state, CheckpointMeta("m", 1, {}), limit=len(whole) - 1) is None
    assert pickle_state(state, CheckpointMeta("m", 1, {}), limit=len(whole)) == whole


def test_round_trip() -> None:
    ckpt = open_record(sealed(), KEYS)
    assert ckpt.meta.offsets == {"events:0": 5}
    assert ckpt.meta.task == "binary" and ckpt.meta.runtime["river"]
    assert isinstance(ckpt.state, ModelState)


def test_every_bit_flip_and_truncation_is_refused() -> None:
    record = sealed()
    for i in range(0, len(record.payload), max(1, len(record.payload) // 50)):
        flipped = bytearray(record.payload)
        flipped[i] ^= 0x01
        with pytest.raises(IntegrityError):
            open_record(record._replace(payload=bytes(flipped)), KEYS)
    with pytest.raises(IntegrityError):
        open_record(record._replace(payload=record.payload[:-1]), KEYS)
    with pytest.raises(IntegrityError):
        open_record(record._replace(header=record.header.replace(b'"events:0":5', b'"events:0":6')), KEYS)


@pytest.mark.parametrize(("key_id", "keys", "message"), [
    ("k1", {"k1": b"wrong"}, "signature does not match"),
    ("k2", KEYS, "unknown key id 'k2'"),
])
def test_a_malicious_pickle_is_never_unpickled(tmp_path: Path, key_id: str, keys: dict[str, bytes],
                                               message: str) -> None:
    marker = tmp_path / "pwned"
    meta = CheckpointMeta("m", 1, {}, key_id=key_id, runtime=open_record(sealed(), KEYS).meta.runtime)
    record = seal_payload(meta, pickle.dumps(_Marker(str(marker))), b"attacker")
    with pytest.raises(IntegrityError, match=message):
        open_record(record, keys)
    with pytest.raises(IntegrityError, match="unsigned"):
        open_record(record._replace(signature=""), KEYS)
    assert not marker.exists()


def test_a_different_river_version_is_refused_with_both_versions() -> None:
    record = sealed()
    meta = json.loads(record.header)
    meta["runtime"]["river"] = "0.1.0"
    forged = seal_payload(CheckpointMeta(**meta), record.payload, KEYS["k1"])
    with pytest.raises(IntegrityError, match=r"written by river 0.1.0, this process runs river \d"):
        open_record(forged, KEYS)
    assert open_record(forged, KEYS, allow_version_mismatch=True).meta.version == 1


def test_store_keeps_the_last_k_versions() -> None:
    store = MemoryStore()
    token = store.acquire("m", ttl=60)
    assert token is not None
    for version in range(1, 8):
        store.save("m", version, sealed(version), token, keep=3)
    assert store.versions("m") == [5, 6, 7]
    assert store.latest_version("m") == 7
    assert open_record(store.load("m"), KEYS).meta.version == 7
    with pytest.raises(NoCheckpoint):
        store.load("m", 2)
    with pytest.raises(NoCheckpoint):
        store.load("other")


def test_a_lease_has_one_holder_and_a_stale_writer_is_fenced() -> None:
    store = MemoryStore()
    zombie = store.acquire("m", ttl=0.05, owner="a")
    assert zombie is not None and store.acquire("m", ttl=60, owner="b") is None
    store.save("m", 1, sealed(1), zombie, keep=3)
    deadline = time.monotonic() + 5
    successor = None
    while successor is None and time.monotonic() < deadline:  # the zombie stops renewing
        successor = store.acquire("m", ttl=60, owner="b")
    assert successor is not None and successor > zombie
    with pytest.raises(FencedError):
        store.save("m", 2, sealed(2), zombie, keep=3)
    with pytest.raises(FencedError):
        store.renew("m", zombie, ttl=60, owner="a")
    with pytest.raises(CheckpointError, match="does not follow"):
        store.save("m", 3, sealed(3), successor, keep=3)
    store.save("m", 2, sealed(2), successor, keep=3)
    assert store.versions("m") == [1, 2]
    store.release("m", zombie, owner="a")  # not the holder: no effect
    assert store.acquire("m", ttl=60, owner="a") is None
    store.release("m", successor, owner="b")
    assert store.acquire("m", ttl=60, owner="a") == successor + 1
    assert store.acquire("m", ttl=60, owner="a") == successor + 2  # "a" restarted: no wait


class _System:
    """Reduces to os.system: what an attacker who holds the key would try."""

    def __reduce__(self) -> tuple[Any, ...]:

        return (os.system, ("true",))


@pytest.mark.parametrize("evil", [_Marker, _System])
def test_correctly_signed_but_forbidden_classes_are_refused(tmp_path: Path, evil: type) -> None:
    marker = tmp_path / "pwned"
    runtime = open_record(sealed(), KEYS).meta.runtime
    payload = pickle.dumps(evil(str(marker)) if evil is _Marker else evil())
    record = seal_payload(CheckpointMeta("m", 1, {}, key_id="k1", runtime=runtime), payload, KEYS["k1"])
    with pytest.raises(IntegrityError, match="forbidden class"):
        open_record(record, KEYS)
    assert not marker.exists()


def signed(payload: bytes, spec: str = "") -> Record:
    runtime = open_record(sealed(), KEYS).meta.runtime
    return seal_payload(CheckpointMeta("m", 1, {}, key_id="k1", runtime=runtime, spec=spec), payload,
                        KEYS["k1"])


class _ToFile:
    """getattr(numpy array, "tofile")(path): an arbitrary file write through allowed parts."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        import numpy as np

        return (np.frombuffer(b"import os\n", dtype=np.uint8).tofile, (self.path,))


class _BuildModel:
    """A REDUCE of our own build_model with a spec that escaped the old sandbox."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        from stream_learner.models import build_model

        return (build_model, (f"utils.pandas.importlib.import_module('os').system('touch {self.path}')",))


@pytest.mark.parametrize(("evil", "refusal"), [
    (_ToFile, "forbidden getattr on a ndarray"),
    (_BuildModel, "forbidden class stream_learner.models.build_model"),
])
def test_signed_chains_through_allowed_parts_are_refused(evil: type, refusal: str, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    with pytest.raises(IntegrityError, match=refusal):
        open_record(signed(pickle.dumps(evil(str(marker)), protocol=5)), KEYS)
    assert not marker.exists()


def test_getattr_takes_river_methods_only() -> None:
    # getattr(<a class of ours>, "fresh"), getattr(<a River model>, "__class__"), as protocol-0 opcodes
    for payload, refusal in [
        (b"cbuiltins\ngetattr\n(cstream_learner.engine\nModelState\nS'fresh'\ntR.", "getattr on a type"),
        (b"cbuiltins\ngetattr\n(criver.linear_model\nLogisticRegression\n)RS'__class__'\ntR.",
         "attribute '__class__'"),
        (b"cbuiltins\ngetattr\n(criver.linear_model\nLogisticRegression\n)RS'l2'\ntR.", "attribute 'l2'"),
    ]:
        with pytest.raises(IntegrityError, match=refusal):
            open_record(signed(payload), KEYS)


def test_a_factory_spec_vouches_for_its_package_only_where_the_configuration_trusts_it() -> None:
    state = ModelState.fresh("tests.unit.factories:fragile_logreg")
    assert type(state.model["Fragile"]).__module__ == "tests.unit.factories"
    record = seal_record(state, CheckpointMeta("m", 1, {}), "k1", KEYS["k1"])
    untrusted = (r"holds tests\.unit\.factories\.Fragile, of its spec's own package 'tests', which "
                 r"this process does not trust: give it --model-packages tests")
    with pytest.raises(IntegrityError, match=untrusted):
        open_record(record, KEYS)  # a signed spec alone does not vouch: the key holder wrote it
    assert open_record(record, KEYS, packages=frozenset({"tests"})).state.learned == 0
    popen = signed(b"cos\npopen\n(S'true'\ntR.", spec="os:popen")
    with pytest.raises(IntegrityError, match=r"holds os\.popen, .* does not trust"):
        open_record(popen, KEYS, packages=frozenset({"tests"}))


def test_a_record_is_valid_only_in_the_slot_its_header_names() -> None:
    store = MemoryStore()
    token = store.acquire("m", ttl=60)
    assert token is not None
    for version in (1, 2):
        store.save("m", version, sealed(version), token, keep=5)
    assert open_record(store.load("m", 2), KEYS).meta.version == 2
    store.records["m"][2] = store.records["m"][1]  # an old record copied into the newer slot
    with pytest.raises(IntegrityError, match="slot of model m v2 is signed as m v1"):
        open_record(store.load("m"), KEYS)
    store.records["other"] = {1: store.records["m"][1]}  # another model's record
    with pytest.raises(IntegrityError, match="slot of model other v1 is signed as m v1"):
        open_record(store.load("other"), KEYS)


@pytest.mark.parametrize("spec", [
    "preprocessing.StandardScaler() | linear_model.LogisticRegression()",
    "tree.HoeffdingTreeClassifier()",
    "forest.ARFClassifier(n_models=3, seed=1)",
    "naive_bayes.GaussianNB()",
    "preprocessing.OneHotEncoder() | linear_model.LogisticRegression()",
    "ensemble.BaggingClassifier(model=linear_model.LogisticRegression(), seed=1)",
    "forest.ARFRegressor(n_models=3, seed=1)",
    "compose.Pipeline(preprocessing.StandardScaler(), linear_model.PAClassifier())",
    "ensemble.LeveragingBaggingClassifier(linear_model.LogisticRegression(), seed=1)",
    "linear_model.SoftmaxRegression()",
    "neighbors.KNNClassifier()",
    "tree.HoeffdingTreeRegressor()",
    "tests.unit.factories:fragile_logreg",
])
def test_trained_river_models_pass_the_allow_list(spec: str) -> None:
    from river import datasets

    from stream_learner.engine import Engine
    from stream_learner.events import Event, Source

    state = ModelState.fresh(spec, window=50)
    engine = Engine(state)
    data = datasets.TrumpApproval() if state.task == "regression" else datasets.Phishing()
    for i, (x, y) in enumerate(data):
        if i == 200:
            break
        engine.process(Event(str(i), None, None, x, y, Source("t", 0, i)))
    record = seal_record(state, CheckpointMeta("m", 1, {}), "k1", KEYS["k1"])
    restored = open_record(record, KEYS, packages=frozenset({"tests"})).state
    for i, (x, _) in enumerate(data):
        if i == 50:
            break
        assert restored.model.predict_one(x) == state.model.predict_one(x)
