"""Benchmark methods by name; importing this package registers them all."""

from splitbench.methods import classifier, entropic_student, input_codec  # noqa: F401  (registration)
from splitbench.methods.base import METHODS, BuildContext, Method, MethodArgs, get_method, list_methods

__all__ = ["METHODS", "BuildContext", "Method", "MethodArgs", "get_method", "list_methods"]
