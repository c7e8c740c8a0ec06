"""The import rule of docs/architecture.md, checked on the source: every ``vprlab`` import (at module
level or inside a function) goes to the same package or to a package of a lower layer, and no
chain of imports leads from a module back to itself."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# Lowest first. A package may import its own modules and those of packages in lower layers only;
# packages of one layer do not import each other. Keep in step with docs/architecture.md.
LAYERS: list[set[str]] = [
    {"utils"},
    {"data", "models", "losses", "tracking"},
    {"config", "pretrained", "evaluation"},
    {"engine", "reports"},
    {"commands"},
    {"__main__", ""},  # "" is the vprlab package itself: the public facade (vprlab.load_pretrained)
]
LAYER_OF = {package: i for i, layer in enumerate(LAYERS) for package in layer}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def vprlab_imports(path: Path) -> set[str]:
    """Modules named by ``import vprlab.x`` / ``from vprlab.x import y`` anywhere in the file; a
    ``from vprlab.x import y`` where ``y`` is itself a module counts as importing ``vprlab.x.y``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "vprlab"}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.split(".")[0] == "vprlab":
            found.add(node.module)
            for alias in node.names:
                sub = SRC.joinpath(*node.module.split("."), alias.name)
                if sub.with_suffix(".py").is_file() or (sub / "__init__.py").is_file():
                    found.add(f"{node.module}.{alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            raise AssertionError(f"{path}: relative import; write `from vprlab... import` so the rule can be checked")
    return found


def import_graph() -> dict[str, set[str]]:
    return {module_name(p): vprlab_imports(p) for p in sorted((SRC / "vprlab").rglob("*.py"))}


def test_every_package_has_a_layer():
    packages = {package_of(m) for m in import_graph()}
    assert packages - set(LAYER_OF) == set(), "add new packages to LAYERS here and to docs/architecture.md"


def test_imports_go_down_the_layers_only():
    wrong = []
    for module, imports in import_graph().items():
        mine = package_of(module)
        for target in imports:
            theirs = package_of(target)
            if theirs != mine and (theirs == "" or LAYER_OF[theirs] >= LAYER_OF[mine]):
                wrong.append(f"{module} (layer {LAYER_OF[mine]}) imports {target} (layer {LAYER_OF[theirs]})")
    assert not wrong, "imports against docs/architecture.md:\n" + "\n".join(sorted(wrong))


def test_no_import_cycles():
    graph = {m: {t for t in imports if t != m} for m, imports in import_graph().items()}
    # A module's imports also run its package's __init__ (importing vprlab.a.b runs vprlab.a first).
    for module, imports in graph.items():
        for target in list(imports):
            parts = target.split(".")
            imports |= {".".join(parts[:i]) for i in range(2, len(parts))} - {module}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                # A package __init__ re-exporting its own modules is not a cycle that can bite.
                if not all(m.startswith(cycle[0]) for m in cycle):
                    pytest.fail("import cycle: " + " -> ".join(cycle))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def _plant(tmp_path, monkeypatch, files: dict[str, str]) -> None:
    """A fake vprlab/data package holding ``files``, checked instead of the real source."""
    package = tmp_path / "vprlab" / "data"
    package.mkdir(parents=True)
    (tmp_path / "vprlab" / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    for name, text in files.items():
        (package / name).write_text(text)
    monkeypatch.setattr(__import__(__name__), "SRC", tmp_path)


def test_the_rule_catches_a_violation(tmp_path, monkeypatch):
    """The checker itself: a data module that imports engine is reported."""
    _plant(tmp_path, monkeypatch, {"oops.py": "def f():\n    from vprlab.engine.trainer import train\n"})
    with pytest.raises(AssertionError, match=r"vprlab.data.oops \(layer 1\) imports vprlab.engine.trainer \(layer 3\)"):
        test_imports_go_down_the_layers_only()


def test_the_cycle_check_catches_a_cycle(tmp_path, monkeypatch):
    _plant(tmp_path, monkeypatch, {"a.py": "from vprlab.data.b import g\n",
                                   "b.py": "def g():\n    from vprlab.data.a import f\n"})
    with pytest.raises(pytest.fail.Exception, match=r"import cycle: vprlab.data.a -> vprlab.data.b -> vprlab.data.a"):
        test_no_import_cycles()
