"""A ``package.module:factory`` model spec, as users write them."""

from __future__ import annotations

from typing import Any

from river import base, linear_model, preprocessing


def scaled_logreg() -> Any:
    return preprocessing.StandardScaler() | linear_model.LogisticRegression()


class Fragile(base.Transformer):  # type: ignore[misc]
    """Counts what it learns and adds the count as a feature; raises on a feature named
    ``boom`` *after* counting, so a failed update leaves it half-updated."""

    def __init__(self) -> None:
        self.seen = 0

    def learn_one(self, x: dict[str, Any]) -> None:
        self.seen += 1
        if "boom" in x:
            raise ValueError("boom: this transformer cannot learn that")

    def transform_one(self, x: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in x.items() if k != "boom"}
        out["seen"] = float(self.seen)
        return out


def fragile_logreg() -> Any:
    return Fragile() | preprocessing.StandardScaler() | linear_model.LogisticRegression()
