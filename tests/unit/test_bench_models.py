"""What the bench's own loops predict with, and what its checkpoint models learn, for any model
and dataset ``make bench`` is given."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.run import _wait_for_log, checkpoint_dataset, user_model


def test_a_users_loop_predicts_a_classifiers_probabilities_and_a_regressors_value() -> None:
    classifier, predict = user_model("linear_model.LogisticRegression()")
    assert predict == classifier.predict_proba_one
    regressor, predict = user_model("linear_model.LinearRegression()")
    assert predict == regressor.predict_one
    regressor.learn_one({"a": 1.0}, 2.0)
    assert isinstance(predict({"a": 1.0}), float)


def test_the_checkpoint_models_learn_the_dataset_when_it_is_binary_and_phishing_otherwise() -> None:
    assert checkpoint_dataset("Bananas") == "Bananas"
    assert checkpoint_dataset("TrumpApproval") == "Phishing"  # regression
    assert checkpoint_dataset("ImageSegments") == "Phishing"  # multiclass: LogReg is binary


def test_a_latency_run_waits_for_its_own_learner_not_the_line_of_the_run_before(tmp_path: Path) -> None:
    log = tmp_path / "latency-learner.log"
    log.write_text("... assigned [('bench.latency.1', 0)]\n")  # the run before
    earlier = log.stat().st_size
    with pytest.raises(SystemExit, match="'assigned' not in"):
        _wait_for_log(log, "assigned", 0.05, after=earlier)
    with log.open("a") as out:
        out.write("... assigned [('bench.latency.2', 0)]\n")
    assert _wait_for_log(log, "assigned", 0.05, after=earlier) > 0

