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
import operator
import pkgutil
import platform
import re
import types
from typing import Any

import river
from river import base

from stream_learner.errors import ModelSpecError

_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
# River modules that read files or the network, or hold no model parts: never reachable from a
# spec or a checkpoint (a path with any of these parts, as in river.bandit.datasets).
NOT_MODELS = frozenset({"api", "checks", "compat", "conf", "datasets", "evaluate", "stream", "pandas"})
_OPERATORS = {ast.BitOr: operator.or_, ast.Add: operator.add}
# Types a spec may name, as in compose.SelectType(int, float).
_TYPES: dict[str, type] = {"bool": bool, "float": float, "int": int, "str": str}


def river_module_allowed(name: str, *, private: bool = False) -> bool:
    """Whether a module may be reached from a spec (or, with ``private``, from a checkpoint,
    whose pickles name River's compiled and private modules)."""
    parts = name.split(".")
    if parts[0] != "river" or NOT_MODELS.intersection(parts):
        return False
    return private or not any(p.startswith("_") for p in parts)


def river_modules() -> dict[str, types.ModuleType]:
    """River's public submodules by name (``linear_model``, ``tree``, ...)."""
    out = {}
    for info in pkgutil.iter_modules(river.__path__):
        if river_module_allowed(f"river.{info.name}"):
            try:
                out[info.name] = importlib.import_module(f"river.{info.name}")
            except ImportError:
                continue
    return out


def build_model(spec: str) -> base.Estimator:
    """Build a fresh, untrained model; ``ModelSpecError`` says what is wrong with the spec.

    A River expression is not run by ``eval``: it is walked and evaluated here, and each name
    it reaches must be one of River's modules, or a class or function defined in one. Modules
    are only ever the base of an attribute (``optim.losses.Log``), never a value or the result of
    a call; attributes are read from modules only, and only calls to River's classes and
    functions are made."""
    spec = spec.strip()
    if _FACTORY.match(spec):
        return _from_factory(spec)
    return _check_estimator(build_expression(spec), spec)


def build_expression(spec: str, flag: str = "--model-spec") -> Any:
    """The value of a River expression, evaluated as ``build_model`` says; errors name ``flag``."""
    spec = spec.strip()
    try:
        tree = ast.parse(spec, mode="eval")
    except SyntaxError as exc:
        raise ModelSpecError(f"{flag}: not a Python expression ({exc.msg}): {spec!r}") from None
    except ValueError as exc:  # e.g. a null byte
        raise ModelSpecError(f"{flag}: {exc}: {spec!r}") from None
    try:
        return _Evaluator(spec, river_modules()).value(tree.body)
    except ModelSpecError as exc:
        raise ModelSpecError(str(exc).replace("--model-spec:", f"{flag}:", 1)) from None
    except RecursionError:
        raise ModelSpecError(f"{flag}: nested too deeply: {spec[:80]!r}") from None
    except Exception as exc:
        raise ModelSpecError(f"{flag}: {spec!r} failed: {type(exc).__name__}: {exc}") from None


class _Evaluator:
    """Evaluates the few kinds of node a spec may hold."""

    def __init__(self, spec: str, modules: dict[str, types.ModuleType]) -> None:
        self.spec = spec
        self.modules = modules

    def refuse(self, why: str) -> ModelSpecError:
        return ModelSpecError(f"--model-spec: {why} (spec {self.spec!r})")

    def value(self, node: ast.expr) -> Any:
        """A value: a constant, a container, a call, an operator, a River class or function."""
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.List | ast.Tuple):
            items = [self.value(e) for e in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.Dict):
            if any(k is None for k in node.keys):
                raise self.refuse("** in a dict is not allowed")
            return {self.value(k): self.value(v) for k, v in zip(node.keys, node.values, strict=True)
                    if k is not None}
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            operand = self.value(node.operand)
            if isinstance(operand, bool) or not isinstance(operand, int | float):
                raise self.refuse("unary minus applies to numbers only")
            return -operand
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            return _OPERATORS[type(node.op)](self.value(node.left), self.value(node.right))
        if isinstance(node, ast.Call):
            return self.call(node)
        if isinstance(node, ast.Name | ast.Attribute):
            found = self.reach(node)
            if isinstance(found, types.ModuleType):
                raise self.refuse(f"a module ({found.__name__}) is not a value")
            return found
        raise self.refuse(f"{type(node).__name__} is not allowed in a spec")

    def call(self, node: ast.Call) -> Any:
        if not isinstance(node.func, ast.Name | ast.Attribute):
            raise self.refuse("only River's classes and functions may be called")
        func = self.reach(node.func)
        if isinstance(func, types.ModuleType):
            raise self.refuse(f"a module ({func.__name__}) cannot be called")
        args = []
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                raise self.refuse("* arguments are not allowed")
            args.append(self.value(arg))
        kwargs = {}
        for kw in node.keywords:
            if kw.arg is None:
                raise self.refuse("** arguments are not allowed")
            kwargs[kw.arg] = self.value(kw.value)
        result = func(*args, **kwargs)
        if isinstance(result, types.ModuleType):
            raise self.refuse(f"{_name(func)}() returned a module")
        return result

    def reach(self, node: ast.expr) -> Any:
        """What a name or an attribute chain names: a River module, or a class or function
        defined in one, read through River's modules only."""
        if isinstance(node, ast.Name):
            if node.id in _TYPES:
                return _TYPES[node.id]
            if node.id not in self.modules:
                raise self.refuse(f"{node.id!r} is not a River module")
            return self.modules[node.id]
        if not isinstance(node, ast.Attribute):
            raise self.refuse(f"attributes are read from River's modules only, not from a "
                              f"{type(node).__name__}")
        if node.attr.startswith("_"):
            raise self.refuse(f"private attribute {node.attr!r}")
        owner = self.reach(node.value)
        if not isinstance(owner, types.ModuleType):
            raise self.refuse(f"attributes are read from River's modules only, not from {_name(owner)}")
        found = getattr(owner, node.attr)
        if isinstance(found, types.ModuleType):
            if found.__name__ != f"{owner.__name__}.{node.attr}" or not river_module_allowed(found.__name__):
                raise self.refuse(f"{owner.__name__}.{node.attr} is not one of River's model modules")
            return found
        if not (isinstance(found, type) or callable(found)) or not river_module_allowed(
                getattr(found, "__module__", None) or ""):
            raise self.refuse(f"{owner.__name__}.{node.attr} is not a class or function of River's")
        return found


def _name(value: Any) -> str:
    return getattr(value, "__qualname__", None) or type(value).__name__


def same_spec(a: str, b: str) -> bool:
    """Whether two specs say the same, whatever their spacing."""
    try:
        return ast.dump(ast.parse(a.strip(), mode="eval")) == ast.dump(ast.parse(b.strip(), mode="eval"))
    except (SyntaxError, ValueError):
        return a.strip() == b.strip()


def check_spec(spec: str, task: str = "auto", flag: str = "--model-spec") -> base.Estimator:
    """Build the model and try it on a first synthetic event (a number, else a string), as the
    first events will: a spec whose arguments River accepts at construction but not in use
    (``LogisticRegression(l2='a lot')``) is refused here, before any I/O, not on every event.
    A ``KeyError`` says the model wants a feature of its own (``BagOfWords(on="text")``), not
    that it is broken. Returns the fresh model that was built, untouched by the trial. Errors
    name ``flag``: the option that gave the spec."""
    try:
        model = build_model(spec)
        trial = build_model(spec)
        kind = infer_task(trial, task)
    except ModelSpecError as exc:
        if flag == "--model-spec":
            raise
        raise ModelSpecError(f"{flag}: {str(exc).split(': ', 1)[-1]}") from None
    label: Any = 1.0 if kind == "regression" else True
    failures = []
    for x in ({"feature": 1.0}, {"feature": "a"}):
        try:
            trial.predict_one(x) if kind == "regression" else trial.predict_proba_one(x)
            trial.learn_one(x, label)
            return model
        except KeyError:
            return model
        except Exception as exc:
            failures.append(f"{type(exc).__name__}: {exc}")
            trial = build_model(spec)
    raise ModelSpecError(f"{flag}: {spec!r} fails on a first event: {failures[0]}")


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
