"""Build a River model from a spec, and say what task it does.

A spec is either a River expression, evaluated against River's modules only,

>>> model = build_model("preprocessing.StandardScaler() | linear_model.LogisticRegression()")
>>> infer_task(model)
'binary'

or ``package.module:factory`` naming a callable that returns a fresh model.

>>> build_model("os.system('id')")
Traceback (most recent call last):
...
stream_learner.errors.ModelSpecError: --model-spec: 'os' is not a River module (spec "os.system('id')")
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import platform
import re
from typing import Any

import river
from river import base

from stream_learner.errors import ModelSpecError

_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
# Modules that read files or the network, or hold no model parts.
_NOT_MODELS = {"api", "checks", "compat", "conf", "datasets", "evaluate", "stream"}
_ALLOWED_NODES = (
    ast.Expression, ast.Call, ast.Attribute, ast.Name, ast.Load, ast.Constant, ast.keyword,
    ast.BinOp, ast.BitOr, ast.UnaryOp, ast.USub, ast.List, ast.Tuple, ast.Dict,
)


def river_modules() -> dict[str, Any]:
    """River's public submodules by name (``linear_model``, ``tree``, ...)."""
    names = [m.name for m in pkgutil.iter_modules(river.__path__)]
    out = {}
    for name in names:
        if name.startswith("_") or name in _NOT_MODELS:
            continue
        try:
            out[name] = importlib.import_module(f"river.{name}")
        except ImportError:
            continue
    return out


def build_model(spec: str) -> base.Estimator:
    """Build a fresh, untrained model; ``ModelSpecError`` says what is wrong with the spec."""
    spec = spec.strip()
    if _FACTORY.match(spec):
        return _from_factory(spec)
    try:
        tree = ast.parse(spec, mode="eval")
    except SyntaxError as exc:
        raise ModelSpecError(f"--model-spec: not a Python expression ({exc.msg}): {spec!r}") from None
    modules = river_modules()
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED_NODES):
            raise ModelSpecError(f"--model-spec: {type(node).__name__} is not allowed in a spec: {spec!r}")
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            raise ModelSpecError(f"--model-spec: private attribute {node.attr!r} in {spec!r}")
        if isinstance(node, ast.Name) and node.id not in modules:
            raise ModelSpecError(f"--model-spec: {node.id!r} is not a River module (spec {spec!r})")
    try:
        model = eval(compile(tree, "<model-spec>", "eval"), {"__builtins__": {}}, modules)
    except Exception as exc:
        raise ModelSpecError(f"--model-spec: {spec!r} failed: {type(exc).__name__}: {exc}") from None
    return _check_estimator(model, spec)


def _from_factory(spec: str) -> base.Estimator:
    module_name, _, attr = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ModelSpecError(f"--model-spec: cannot import {spec!r}: {exc}") from None
    try:
        model = factory()
    except Exception as exc:
        raise ModelSpecError(f"--model-spec: {spec!r}() failed: {type(exc).__name__}: {exc}") from None
    return _check_estimator(model, spec)


def _check_estimator(model: Any, spec: str) -> base.Estimator:
    if not isinstance(model, base.Estimator) or not hasattr(model, "learn_one"):
        raise ModelSpecError(f"--model-spec: {spec!r} is a {type(model).__name__}, not a River model")
    if not isinstance(model, base.Classifier | base.Regressor):
        raise ModelSpecError(f"--model-spec: {spec!r} is neither a classifier nor a regressor")
    return model


def infer_task(model: base.Estimator, declared: str = "auto") -> str:
    """binary, multiclass or regression; a declared task must fit the model."""
    if isinstance(model, base.Regressor):
        task = "regression"
    else:
        task = "multiclass" if getattr(model, "_multiclass", False) else "binary"
    if declared in ("auto", task):
        return task
    if declared == "binary" and task == "multiclass":
        return "binary"  # a multiclass model can do a binary task
    raise ModelSpecError(f"--task: the model does {task}, it cannot do {declared}")


def runtime_versions() -> dict[str, str]:
    """What a pickled model depends on: checked when a checkpoint is loaded."""
    return {"river": river.__version__, "python": platform.python_version()}
