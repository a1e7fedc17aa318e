"""Promotion: a challenger becomes the champion, by an operator's request or by a policy.

A promotion replaces the champion's state with the challenger's (its model, metrics, counts and
pending labels): from then on it answers on the predictions topic. The former champion is
dropped; the versions before the promotion still hold it. The other challengers go on. The
promotion is written into the state's ``history``, with its reason and the figures at the time,
so that the checkpoint that holds the new champion also holds why.

The policy compares the two on the same events: the last ``window`` labelled events both were
scored on, once the challenger has learned ``min_events``.

>>> from stream_learner.engine import ModelState
>>> state = ModelState.fresh("linear_model.LogisticRegression()")
>>> state.challengers["b"] = ModelState.fresh("tree.HoeffdingTreeClassifier()")
>>> promoted = promote(state, "b", by="operator", reason="a test", version=4, events=0)
>>> promoted.spec, list(promoted.challengers), promoted.history[-1]["former_spec"]
('tree.HoeffdingTreeClassifier()', [], 'linear_model.LogisticRegression()')
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from stream_learner.engine import ModelState
from stream_learner.metrics import default_metrics

HISTORY_KEPT = 100  # the newest entries of a model's history, in its checkpoints


@dataclass(frozen=True)
class Policy:
    """Promote a challenger whose ``metric`` over the last ``window`` labelled events is better
    than the champion's by ``margin`` (relative: 0.02 is 2%), once it has learned
    ``min_events``."""

    metric: str
    margin: float = 0.02
    min_events: int = 5000
    window: int = 1000


def metric_names(task: str) -> list[str]:
    """The metrics a policy may judge by: those the learner keeps for ``task``."""
    return [type(m).__name__ for m in default_metrics(task)]


def judge(state: ModelState, policy: Policy) -> tuple[str, str, dict[str, float]] | None:
    """The challenger the policy promotes now, the reason, and the figures it compared; None
    when none qualifies (the best one when several do)."""
    champion = state.metrics.over(policy.metric, policy.window)
    if champion is None:
        return None
    best: tuple[float, str, float] | None = None
    for name, challenger in state.challengers.items():
        if challenger.error or challenger.learned < policy.min_events:
            continue
        value = challenger.metrics.over(policy.metric, policy.window)
        if value is None:
            continue
        gain = _gain(policy.metric, state.task, champion, value)
        if gain >= policy.margin and (best is None or gain > best[0]):
            best = (gain, name, value)
    if best is None:
        return None
    gain, name, value = best
    reason = (f"{policy.metric} over the last {policy.window} labelled events: {value:.6g} against the "
              f"champion's {champion:.6g}, {gain:.2%} better (policy: {policy.margin:.2%}, at least "
              f"{policy.min_events} learned)")
    return name, reason, {"champion": champion, "challenger": value, "gain": gain}


def _gain(metric: str, task: str, champion: float, challenger: float) -> float:
    """How much better the challenger is, relative to the champion (negative: worse)."""
    bigger = next(m for m in default_metrics(task) if type(m).__name__ == metric).bigger_is_better
    if champion == 0:
        return 0.0 if challenger == champion else (1.0 if (challenger > 0) == bigger else -1.0)
    change = (challenger - champion) / abs(champion)
    return change if bigger else -change


def promote(state: ModelState, name: str, *, by: str, reason: str, version: int, events: int,
            figures: dict[str, float] | None = None, request: str = "") -> ModelState:
    """The new champion's state: challenger ``name`` of ``state``, with the other challengers and
    the history, and an entry for this promotion. ``version``: the checkpoint that will hold it."""
    new = state.challengers[name]
    entry: dict[str, Any] = {
        "action": "promote", "at": time.time(), "version": version, "by": by, "reason": reason,
        "challenger": name, "spec": new.spec, "former_spec": state.spec, "events": events,
        "metrics": {"champion": state.metrics.report(), "challenger": new.metrics.report()},
        "learned": {"champion": state.learned, "challenger": new.learned},
    }
    if figures:
        entry["compared"] = figures
    if request:
        entry["request"] = request
    new.challengers = {n: c for n, c in state.challengers.items() if n != name}
    new.drift = None if state.drift is None else state.drift.fresh()  # it watches the new one
    new.started_by = ""
    new.history = [*state.history, entry][-HISTORY_KEPT:]
    state.challengers = {}
    return new


def refused(state: ModelState, request: str, reason: str, version: int) -> None:
    """Record an operator's request that could not be applied (it is not tried again)."""
    state.history = [*state.history, {"action": "refused", "at": time.time(), "version": version,
                                      "by": "operator", "request": request, "reason": reason}][-HISTORY_KEPT:]


def applied(state: ModelState, request: str) -> bool:
    """Whether the operator's request ``request`` (its id) is in the history already."""
    return any(entry.get("request") == request for entry in state.history)


def origin_spec(state: ModelState) -> str:
    """The spec the model was first started with (the champion's own since its first promotion)."""
    promotions = [e for e in state.history if e.get("action") == "promote"]
    return str(promotions[0]["former_spec"]) if promotions else state.spec


def promoted_names(state: ModelState) -> set[str]:
    """The challengers that were promoted: they are not started again under their names."""
    return {str(e["challenger"]) for e in state.history if e.get("action") == "promote"}
