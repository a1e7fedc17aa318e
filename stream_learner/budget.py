"""The feature budget: a bound on what a model can grow by.

A River model keeps a weight, a mean, a split statistic... per feature it has seen, so a stream
of ever-new feature names grows it without end. The budget counts the model's feature keys: a
number's (or boolean's) key is its name, a string's key is its name and value together (what
one-hot encoding turns it into). The learner admits new keys until ``max_features`` are known;
past that, an event's unknown keys are dropped before the model sees it, and counted. A frozen
predictor admits nothing: it predicts on the known keys only, so serving never changes the
model.

>>> budget = FeatureBudget(max_features=3)
>>> budget.admit({"amount": 1.0, "country": "FR"})
{'amount': 1.0, 'country': 'FR'}
>>> budget.admit({"amount": 2.0, "country": "DE", "age": 30})
{'amount': 2.0, 'country': 'DE'}
>>> budget.known_features, budget.refused
(3, 1)
>>> budget.restrict({"amount": 3.0, "country": "IT", "new": 1})
{'amount': 3.0}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Features = dict[str, Any]
MAX_FEATURES = 100_000


@dataclass
class FeatureBudget:
    max_features: int = MAX_FEATURES
    known: set[Any] = field(default_factory=set)  # names, and (name, value) of string features
    refused: int = 0  # features dropped from events since the budget was spent

    @property
    def known_features(self) -> int:
        return len(self.known)

    def admit(self, x: Features) -> Features:
        """``x`` as the learning model may see it: new keys join the known ones while the budget
        lasts; past it, they are dropped. ``x`` itself when nothing is dropped."""
        known = self.known
        dropped: set[str] = set()
        for k, v in x.items():
            key = (k, v) if type(v) is str else k
            if key not in known:
                if len(known) < self.max_features:
                    known.add(key)
                else:
                    dropped.add(k)
        if not dropped:
            return x
        self.refused += len(dropped)
        return {k: v for k, v in x.items() if k not in dropped}

    def restrict(self, x: Features) -> Features:
        """``x`` with the known keys only: what a frozen model may see without changing."""
        known = self.known
        if all(((k, v) if type(v) is str else k) in known for k, v in x.items()):
            return x
        return {k: v for k, v in x.items() if ((k, v) if type(v) is str else k) in known}
