"""``stream-learner models`` for key-scope models (docs/scaling.md): ``list`` shows a model's
partitions, ``reset`` deletes them. The other actions are about a global model's versions.

Each line reads the partition's checkpoint header, which is signed but readable without
unpickling anything.
"""

from __future__ import annotations

import time

from stream_learner.checkpoint import read_meta
from stream_learner.errors import StreamLearnerError
from stream_learner.state.keyed_base import KeyedStore


def model_lines(store: KeyedStore) -> list[str]:
    """A line per key-scope model: its partitions, keys, events learned and newest checkpoint."""
    lines = []
    for model in store.models():
        try:
            rows = [_row(store, model, p) for p in store.partitions(model)]
        except StreamLearnerError as exc:
            lines.append(f"{model}  key scope  unreadable: {exc}")
            continue
        saved = [row for row in rows if row is not None]
        line = (f"{model}  key scope  {len(rows)} partitions  keys {sum(r[1] for r in saved)}"
                f"  learned {sum(r[2] for r in saved)}")
        if saved:
            line += f"  newest checkpoint {time.time() - max(r[3] for r in saved):.1f}s ago"
        lines.append(line)
    return lines


def list_partitions(store: KeyedStore, model: str) -> int:
    """A line per partition of the model: version, keys, events learned, checkpoint age."""
    for partition in store.partitions(model):
        try:
            row = _row(store, model, partition)
        except StreamLearnerError as exc:
            print(f"partition {partition}  unreadable: {exc}")
            continue
        if row is None:
            print(f"partition {partition}  claimed, no checkpoint yet")
        else:
            version, keys, learned, at = row
            print(f"partition {partition}  v{version}  keys {keys}  learned {learned}"
                  f"  age {time.time() - at:.1f}s")
    return 0


def _row(store: KeyedStore, model: str, partition: int) -> tuple[int, int, int, float] | None:
    record = store.partition(model, partition)
    if record is None:
        return None
    meta = read_meta(record)
    return meta.version, store.key_count(model, partition), meta.learned, meta.created_at


def reset(store: KeyedStore, model: str) -> str:
    """Delete the model's partitions (their fences grow: a learner still running writes nothing
    more): what was deleted."""
    partitions = store.partitions(model)
    keys = sum(store.reset_partition(model, p) for p in partitions)
    return (f"model {model}: deleted the checkpoints of {len(partitions)} partitions and {keys} key "
            "models; the next learners start them afresh (a learner still running writes nothing "
            "more: restart it)")
