"""The package's layering, read off its import graph (every import, module-level or inside a function):
no import cycle; config.py is schema and loading only; a method module declares with the lower layers and
imports no other method; the lower layers never import the ones built on them; and the training recipes and
methods never ask which type of model they hold."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "splitbench"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The package modules ``path`` imports (a ``from package import name`` counts as ``package.name`` when that
    is a module); imports under ``if TYPE_CHECKING:`` make no runtime edge."""
    tree = ast.parse(path.read_text())
    own = module_name(path)
    package = own if path.name == "__init__.py" else own.rpartition(".")[0]
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in
                   ast.unparse(node.test) for stmt in node.body for n in ast.walk(stmt)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != own:
                found.add(name)
    if path.name == "__init__.py" and "iter_modules(__path__)" in path.read_text():  # imports every sibling
        found |= {m for m in modules if m.rpartition(".")[0] == own}
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: imports_of(path, set(paths)) for name, path in paths.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for child in graph[node]:
            if child not in index:
                visit(child)
                low[node] = min(low[node], low[child])
            elif child in stack:
                low[node] = min(low[node], index[child])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_package_has_no_import_cycle(graph):
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_config_is_schema_and_loading_only(graph):
    assert graph["splitbench.config"] <= {"splitbench.errors"}


METHOD_LAYERS = ("splitbench.models", "splitbench.training", "splitbench.pipelines", "splitbench.codecs",
                 "splitbench.compression", "splitbench.errors", "splitbench.methods.base")


def test_methods_declare_with_the_lower_layers_and_import_no_other_method(graph):
    methods = [m for m in graph if m.startswith("splitbench.methods.") and m != "splitbench.methods.base"]
    assert len(methods) >= 10
    for method in methods:
        wrong = [m for m in graph[method] if not m.startswith(METHOD_LAYERS)]
        assert not wrong, f"{method} imports {wrong}"


@pytest.mark.parametrize(("lower", "upper"), [
    ("splitbench.models", ("splitbench.methods", "splitbench.runs", "splitbench.experiment", "splitbench.bench",
                           "splitbench.pipelines", "splitbench.cli", "splitbench.runtime")),
    ("splitbench.compression", ("splitbench.models", "splitbench.methods", "splitbench.pipelines",
                                "splitbench.training", "splitbench.runs", "splitbench.runtime")),
    ("splitbench.pipelines", ("splitbench.methods", "splitbench.runs", "splitbench.training", "splitbench.bench",
                              "splitbench.runtime")),
    ("splitbench.training", ("splitbench.methods", "splitbench.runs", "splitbench.bench", "splitbench.pipelines",
                             "splitbench.runtime")),
    ("splitbench.data", ("splitbench.models", "splitbench.methods", "splitbench.tasks", "splitbench.runs")),
    ("splitbench.deploy", ("splitbench.methods", "splitbench.models", "splitbench.training", "splitbench.pipelines",
                           "splitbench.runs", "splitbench.experiment", "splitbench.cli", "splitbench.runtime.server",
                           "splitbench.runtime.serve", "splitbench.runtime.app")),  # records and profiles only
])
def test_lower_layers_do_not_import_the_ones_built_on_them(graph, lower, upper):
    for module in (m for m in graph if m.startswith(lower)):
        wrong = [m for m in graph[module] if m.startswith(upper)]
        assert not wrong, f"{module} imports {wrong}"


@pytest.mark.parametrize("folder", ["methods", "training"])
def test_recipes_and_methods_never_test_a_models_type(folder):
    """Only data containers (a batch's tensors, dicts, lists) may be told apart by type there."""
    allowed = {"torch.Tensor", "dict", "(list, tuple)", "list", "tuple"}
    for path in (PACKAGE / folder).glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("isinstance", "issubclass"):
                assert ast.unparse(node.args[1]) in allowed, f"{path.name}:{node.lineno}: {ast.unparse(node)}"


# Run where torch is not installed (tests/test_export.py runs the device so): the device, the codec device of the
# full-offloading reference, and the client's encode-and-send path (its link model, its image reader, the wire
# protocol). The deployment model and planner too: they compute from records and profiles.
TORCH_FREE = ("splitbench.runtime.device", "splitbench.runtime.codec_device", "splitbench.runtime.client",
              "splitbench.runtime.link", "splitbench.runtime.inputs", "splitbench.runtime.protocol",
              "splitbench.deploy.radio", "splitbench.deploy.links", "splitbench.deploy.profiles",
              "splitbench.deploy.model", "splitbench.deploy.planner", "splitbench.deploy.check")


def imports_torch(path: Path) -> bool:
    """Whether ``path`` imports torch, torchvision or compressai anywhere (module level or in a function)."""
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""] if (
            isinstance(node, ast.ImportFrom) and not node.level) else []
        if any(n.partition(".")[0] in ("torch", "torchvision", "compressai") for n in names):
            return True
    return False


def test_the_device_runtime_imports_nothing_that_imports_torch(graph):
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    for root in TORCH_FREE:
        seen, todo = set(), [root]
        while todo:
            module = todo.pop()
            if module in seen:
                continue
            seen.add(module)
            parts = module.split(".")  # importing a module runs its packages' __init__ first
            todo += [".".join(parts[:i]) for i in range(1, len(parts))] + sorted(graph[module])
        if root == "splitbench.runtime.device":  # the walk really follows imports
            assert "splitbench.compression.bitstream" in seen
        if root == "splitbench.runtime.codec_device":
            assert "splitbench.codecs.pillow_codecs" in seen
        wrong = sorted(m for m in seen if imports_torch(paths[m]))
        assert not wrong, f"{root} imports {wrong}, which import torch"
