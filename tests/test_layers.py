"""The package's folders are its layers: a lower layer never imports a higher one, and no
module imports itself back through others (no cycles), lazily or not."""

from __future__ import annotations

import ast
from pathlib import Path

import ggr_kv

PKG = Path(ggr_kv.__file__).resolve().parent
#: the layers, lowest first; a module may import its own layer and those before it
LAYERS = ("core", "datasets", "simulate", "reorder", "engine", "collector", "run", "analysis",
          "cli")


def _modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        rel = p.relative_to(PKG).with_suffix("")
        parts = ["ggr_kv", *rel.parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _imports(mod: str, path: Path) -> set[str]:
    """Every ggr_kv module ``mod`` imports, at the top or inside functions."""
    found: set[str] = set()
    pkg = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("ggr_kv")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                name = ".".join([*base, *([node.module] if node.module else [])])
            else:
                name = node.module or ""
            if name.startswith("ggr_kv"):
                found.add(name)
                found |= {f"{name}.{a.name}" for a in node.names}
    return found


def _layer(mod: str) -> int | None:
    parts = mod.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {m: {i for i in _imports(m, p) if i in mods and i != m} for m, p in mods.items()}


def test_every_module_lives_in_a_layer():
    loose = [m for m in _modules() if _layer(m) is None and m not in ("ggr_kv", "ggr_kv.__main__")]
    assert not loose, f"modules outside the layer folders {LAYERS}: {loose}"


def test_lower_layers_never_import_higher_ones():
    bad = []
    for mod, deps in _graph().items():
        lm = _layer(mod)
        for d in deps:
            ld = _layer(d)
            if lm is not None and ld is not None and ld > lm:
                bad.append(f"{mod} ({LAYERS[lm]}) imports {d} ({LAYERS[ld]})")
    assert not bad, "\n".join(sorted(bad))


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            if d == "ggr_kv" or (m.startswith(d + ".") and d in graph):
                continue  # a package's own __init__ re-exports its modules
            if state.get(d) == 1:
                cycles.append([*stack[stack.index(d):], d] if d in stack else [m, d])
            elif d not in state:
                visit(d, [*stack, d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)
