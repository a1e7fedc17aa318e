"""A ``package.module:factory`` model spec, as users write them."""

from __future__ import annotations

from typing import Any

from river import linear_model, preprocessing


def scaled_logreg() -> Any:
    return preprocessing.StandardScaler() | linear_model.LogisticRegression()
