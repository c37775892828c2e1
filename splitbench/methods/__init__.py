"""Benchmark methods by name. Every module in this package registers its methods on import, and
all of them are imported here, so adding a method is adding a file."""

import importlib
import pkgutil

from splitbench.methods.base import METHODS, BuildContext, Method, MethodArgs, get_method, list_methods

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["METHODS", "BuildContext", "Method", "MethodArgs", "get_method", "list_methods"]
