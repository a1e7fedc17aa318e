"""The second layer behind a checkpoint's signature: what a pickled model state may build.

A signed record may still be hostile (whoever holds the key can sign anything), and a pickle
calls whatever it names. So the unpickler names only what a model state needs, and what it
names may be called with any arguments without harm: a checkpoint builds nothing that a model
spec could not.

* builtin and ``collections`` containers, ``random.Random``, ``functools.partial``,
  ``copy.deepcopy`` (of what is already built), NumPy's array constructors;
* classes and functions defined in River's model modules (never ``datasets``, ``stream`` and
  the other modules that read files or the network);
* the few classes of ours a state is made of: never a function of ours;
* ``getattr`` only to take a method of a River object defined in River (how a pickle holds a
  bound method, as ``LeveragingBaggingClassifier`` does): never of a NumPy array, a class, a
  module or anything else.

A ``package.module:factory`` spec that the record was signed with vouches for the classes and
functions defined in its package.
"""

from __future__ import annotations

import io
import pickle
import types
from typing import Any

from stream_learner.errors import CheckpointError, IntegrityError
from stream_learner.models import river_module_allowed

_ALLOWED = {
    "builtins": {"bool", "bytearray", "bytes", "complex", "dict", "float", "frozenset", "int", "list",
                 "range", "set", "slice", "str", "tuple", "getattr"},
    "collections": {"Counter", "OrderedDict", "defaultdict", "deque"},
    "copy": {"deepcopy"},
    "functools": {"partial"},
    "random": {"Random"},
}
_NUMPY = {"dtype", "ndarray", "scalar", "_reconstruct", "_frombuffer"}
_OURS = {
    ("stream_learner.engine", "ModelState"),
    ("stream_learner.metrics", "PrequentialMetrics"),
    ("stream_learner.pending", "PendingLabels"),
    ("stream_learner.pending", "Waiting"),
    ("stream_learner.budget", "FeatureBudget"),
    ("stream_learner.drift", "DriftWatch"),
    ("stream_learner.keyed", "KeyModel"),
    ("stream_learner.keyed", "PartitionState"),
}
_FUNCTIONS = (types.FunctionType, types.BuiltinFunctionType)


def load(payload: bytes, factory_package: str = "", trusted: bool = False) -> Any:
    """Unpickle ``payload`` with the allow-list; ``IntegrityError`` names what it refused.
    ``factory_package``: the package of the record's ``package.module:factory`` spec, whose
    classes are allowed if this process ``trusted`` it (``CheckpointError`` if it cannot import
    them)."""
    return _Unpickler(io.BytesIO(payload), factory_package, trusted).load()


def _defined_in(value: Any, allowed: Any) -> bool:
    return isinstance(value, (type, *_FUNCTIONS)) and allowed(getattr(value, "__module__", None) or "")


def _in_river(module: str) -> bool:
    return river_module_allowed(module, private=True)


def river_getattr(obj: Any, name: str) -> Any:
    """``getattr`` as River's pickles use it: a River object's own method, bound."""
    if name.startswith("__"):
        raise IntegrityError(f"forbidden attribute {name!r} in the pickle")
    if isinstance(obj, type | types.ModuleType) or not _in_river(type(obj).__module__):
        raise IntegrityError(f"forbidden getattr on a {type(obj).__name__} in the pickle")
    value = getattr(obj, name)
    if not (isinstance(value, types.MethodType) and _defined_in(value.__func__, _in_river)):
        raise IntegrityError(f"forbidden attribute {name!r} ({type(value).__name__}) in the pickle")
    return value


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, factory_package: str, trusted: bool) -> None:
        super().__init__(file)
        self.factory_package = factory_package
        self.trusted = trusted

    def find_class(self, module: str, name: str) -> Any:
        top = module.split(".")[0]
        if name in _ALLOWED.get(module, ()):
            return river_getattr if name == "getattr" else super().find_class(module, name)
        if top == "numpy" and name in _NUMPY:
            return super().find_class(module, name)
        if (module, name) in _OURS:
            return super().find_class(module, name)
        if _in_river(module) and _defined_in(value := super().find_class(module, name), _in_river):
            return value
        package = self.factory_package
        if package and top == package:
            if not self.trusted:
                raise IntegrityError(
                    f"the model holds {module}.{name}, of its spec's own package {package!r}, which "
                    f"this process does not trust: give it --model-packages {package}")
            try:
                value = super().find_class(module, name)
            except ImportError as exc:
                raise CheckpointError(
                    f"the model needs {module}.{name}, and this process cannot import it ({exc}): "
                    "install its package, or put its directory on PYTHONPATH, wherever the model "
                    "is learned or served") from None
            if _defined_in(value, lambda m: m.split(".")[0] == package):
                return value
        raise IntegrityError(f"forbidden class {module}.{name} in the pickle: refusing it")
