"""The package's import graph: light to import, and no cycles between its modules."""

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
HEAVY = ("pytorch_metric_learning", "matplotlib", "faiss", "timm")


def _absent_after(code: str) -> list[str]:
    """The HEAVY modules loaded by running ``code`` in a fresh interpreter."""
    probe = f"{code}\nimport sys\nprint(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return [m for m in out.stdout.strip().split(",") if m]


def test_import_clusterloss_and_the_loss_stay_light():
    # The loss alone must not need pytorch-metric-learning, matplotlib, faiss or timm.
    code = (
        "import torch, clusterloss\n"
        "from clusterloss.losses import build_loss\n"
        "loss = build_loss('facility_location')(torch.randn(8, 4), torch.arange(8) % 2)\n"
        "assert loss.dim() == 0"
    )
    assert _absent_after(code) == []


def test_building_the_cli_parser_does_not_load_matplotlib():
    assert "matplotlib" not in _absent_after("from clusterloss.cli import build_parser\nbuild_parser()")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _module_level_imports(path: Path, name: str, modules: set[str]) -> set[str]:
    """Modules of the package that ``path`` imports when it is imported (not inside functions)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    stack = list(ast.parse(path.read_text()).body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            # ``from pkg import sub`` imports the module pkg.sub; ``from mod import name`` imports mod.
            targets = [
                f"{module}.{a.name}" if f"{module}.{a.name}" in modules else module for a in node.names
            ]
        else:
            stack.extend(ast.iter_child_nodes(node))
            continue
        for target in targets:
            # Importing a.b.c runs a/__init__ and a/b/__init__ first: those are edges too, except towards
            # the importing module's own packages (already being imported when it runs).
            parts = target.split(".")
            for i in range(1, len(parts) + 1):
                step = ".".join(parts[:i])
                if step in modules and step != name and not name.startswith(step + "."):
                    found.add(step)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_package_import_graph_has_no_cycle():
    paths = {_module_name(p): p for p in (SRC / "clusterloss").rglob("*.py")}
    modules = set(paths)
    graph = {name: _module_level_imports(path, name, modules) for name, path in paths.items()}
    assert graph["clusterloss.train_cli"] >= {"clusterloss.train"}  # the parser sees real edges
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_bottom_layer_imports_nothing_else_of_the_package():
    paths = {_module_name(p): p for p in (SRC / "clusterloss").rglob("*.py")}
    modules = set(paths)
    bottom = [n for n in paths if n.startswith("clusterloss.utils") or n == "clusterloss.contingency"]
    for name in bottom:
        others = {m for m in _module_level_imports(paths[name], name, modules) if m not in bottom}
        assert others == set(), name
