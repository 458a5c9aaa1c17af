"""Compares python/erlang.pyi with the real `erlang` module, for
test/embedded_python_SUITE.erl.  check() returns a list of differences."""
import ast
import importlib.util
import inspect
import os
import sys

import erlang

# Dunders a C type gets without declaring them (repr, rich comparisons made
# from one slot, class attributes), and the buffer protocol's, which exist
# as methods only on 3.12+.
_IMPLICIT = {"__doc__", "__module__", "__repr__", "__lt__", "__le__", "__gt__", "__ge__",
             "__dict__", "__weakref__", "__reduce__", "__init__", "__new__"}
_BUFFER = {"__buffer__", "__release_buffer__"}


def stub_path():
    wsgi = importlib.util.find_spec("erlpy_wsgi").origin
    return os.path.join(os.path.dirname(wsgi), "erlang.pyi")


def _params(fn):
    a = fn.args
    return [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs if p.arg != "self"]


def _real_params(obj):
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return None
    return [p for p in sig.parameters if p != "self"]


def check():
    tree = ast.parse(open(stub_path(), encoding="utf-8").read())
    problems = []
    stub = {}
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            stub[node.name] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            stub[node.target.id] = node
    real = {n for n in dir(erlang) if not n.startswith("_")}
    problems += [f"missing from the stub: erlang.{n}" for n in sorted(real - set(stub))]
    problems += [f"in the stub, not in the module: erlang.{n}" for n in sorted(set(stub) - real)]
    for name in sorted(real & set(stub)):
        node, obj = stub[name], getattr(erlang, name)
        if isinstance(node, ast.FunctionDef):
            want = _real_params(obj)
            if want is not None and want != _params(node):
                problems.append(f"erlang.{name}: stub parameters {_params(node)}, real {want}")
        elif isinstance(node, ast.ClassDef):
            problems += _check_class(name, node, obj)
    return problems


def _check_class(name, node, cls):
    problems = []
    if not isinstance(cls, type):
        return [f"erlang.{name} is a class in the stub, a {type(cls).__name__} in the module"]
    bases = [b.id if isinstance(b, ast.Name) else ast.unparse(b) for b in node.bases]
    real_base = cls.__bases__[0]
    if bases and bases[0].split(".")[-1] != real_base.__name__ and name != "PyBuffer":
        problems.append(f"erlang.{name}: stub base {bases[0]}, real {real_base.__name__}")
    members = {}
    for item in node.body:
        if isinstance(item, ast.FunctionDef):
            members[item.name] = item
        elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
            members[item.target.id] = item
    own = set(vars(cls))
    if issubclass(cls, BaseException):
        # Exceptions: their attributes are set per instance; check the ones
        # the stub names by making one, if the stub gives __init__.
        if "__init__" in members:
            inst = cls(*[b""] + [None] * (len(_params(members["__init__"])) - 1))
            for attr in members:
                if not attr.startswith("_") and not hasattr(inst, attr):
                    problems.append(f"erlang.{name}: no attribute {attr}")
        return problems
    for attr in sorted(own - set(members) - _IMPLICIT - _BUFFER):
        problems.append(f"missing from the stub: erlang.{name}.{attr}")
    for attr in sorted(set(members) - own - _IMPLICIT):
        if attr in _BUFFER and sys.version_info < (3, 12):
            continue
        if attr in ("__hash__", "__eq__", "__ne__") and getattr(cls, attr, None) is not None:
            continue
        problems.append(f"in the stub, not in the module: erlang.{name}.{attr}")
    for attr in sorted(set(members) & own):
        item = members[attr]
        # Slot wrappers (__eq__, __len__, ...) have generic parameter names.
        if isinstance(item, ast.FunctionDef) and not attr.startswith("__") and not any(
                isinstance(d, ast.Name) and d.id == "property" for d in item.decorator_list):
            want = _real_params(getattr(cls, attr))
            if want is not None and want != _params(item):
                problems.append(f"erlang.{name}.{attr}: stub parameters {_params(item)}, real {want}")
    return problems
