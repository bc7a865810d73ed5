"""The shape of the code: no import cycles, small files, every editor a package of its own that the pipeline
depends on exactly, and a README layout section that matches the tree."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import yaml

from lifelong.core.paths import ROOT

PACKAGE = ROOT / "lifelong"
MAX_LINES = 400


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The lifelong modules `path` imports (absolute and relative, at any depth of the file)."""
    me = _module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("lifelong")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("lifelong"):
                found.add(target)
                found |= {f"{target}.{a.name}" for a in node.names}   # `from . import registry`
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        deps = set()
        for target in _imports(path):
            while target and target not in modules:       # `from x import name` where name is not a module
                target = target.rpartition(".")[0]
            if target and target != name:
                deps.add(target)
        graph[name] = deps
    return graph


def test_no_import_cycles():
    graph = _graph()
    # a package's __init__ importing its own submodules is the package's API, not a cycle of modules
    edges = {m: {d for d in deps if not m.startswith(d + ".") and not (d.startswith(m + ".") and
                                                                      PACKAGE.joinpath(*m.split(".")[1:], "__init__.py").exists())}
             for m, deps in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)


def test_files_stay_small():
    long = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"files over {MAX_LINES} lines: {long}"


def test_library_code_picks_no_matplotlib_backend():
    offenders = [str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py") if re.search(r"matplotlib\.use\(", p.read_text())]
    assert not offenders, f"library code must not pick a backend (notebooks show figures inline): {offenders}"


def test_every_editor_is_a_package_the_pipeline_depends_on():
    from lifelong.editors import EDITORS

    for name, target in EDITORS.items():
        package = PACKAGE / "editors" / name
        assert (package / "__init__.py").exists(), f"editor {name!r} must be the package lifelong/editors/{name}/"
        assert target.startswith(f"lifelong.editors.{name}:"), target
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert "lifelong/editors/${item.editor}" in stages["edit"]["deps"]
    assert "lifelong" not in stages["edit"]["deps"], "an edit stage must not depend on the whole package"
    # adding an editor's registry line must not rerun the other editors' stages
    assert not any(d in ("lifelong/editors", "lifelong/editors/registry.py") for d in stages["edit"]["deps"])


def _readme_layout() -> list[tuple[int, str]]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Layout\n+```\n(.*?)```", text, re.S)
    assert block, "README.md has no '## Layout' code block"
    entries = []
    for line in block.group(1).splitlines():
        m = re.match(r"^( *)(\S+)", line)
        if m and not m.group(2).startswith("#"):
            entries.append((len(m.group(1)), m.group(2)))
    return entries


def test_readme_layout_matches_the_tree():
    """Every path in the README's layout block exists, and every module of the package is named there."""
    named, parents = set(), []
    for indent, name in _readme_layout():
        while parents and parents[-1][0] >= indent:
            parents.pop()
        path = "/".join([p for _, p in parents] + [name]).replace("//", "/").rstrip("/")
        assert (ROOT / path).exists(), f"README layout names {path}, which does not exist"
        named.add(path)
        if name.endswith("/"):
            parents.append((indent, name.rstrip("/")))
    modules = {str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py")
               if p.name not in ("__init__.py", "__main__.py")}
    packages = {str(p.parent.relative_to(ROOT)) for p in PACKAGE.rglob("__init__.py")}
    missing = sorted(m for m in modules | packages if m not in named)
    assert not missing, f"README layout does not name: {missing}"
