"""resin_py.protocol stays sans-IO: no module in it imports anything that does I/O."""

from __future__ import annotations

import ast
from pathlib import Path

import resin_py.protocol

FORBIDDEN = {"os", "select", "selectors", "subprocess", "socket", "signal", "fcntl", "asyncio"}


def test_protocol_package_imports_no_io_modules() -> None:
    package = Path(resin_py.protocol.__file__).parent
    for path in sorted(package.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN, f"{path.name} imports {name}"


def _resin_imports(path: Path) -> set[str]:
    """Modules of resin_py that `path` imports anywhere, except in
    `if TYPE_CHECKING:` blocks (those never run)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("resin_py"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(
                "resin_py"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in MODULES else node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


ROOT = Path(resin_py.protocol.__file__).parent.parent
MODULES = {
    ".".join(("resin_py", *p.relative_to(ROOT).with_suffix("").parts)).removesuffix(".__init__"): p
    for p in ROOT.rglob("*.py")
}


def test_no_import_cycles() -> None:
    graph = {name: _resin_imports(path) for name, path in MODULES.items()}
    done: set[str] = set()

    def walk(name: str, path: list[str]) -> None:
        if name in path:
            raise AssertionError("import cycle: " + " -> ".join([*path[path.index(name):], name]))
        if name in done:
            return
        for dep in graph.get(name, ()):
            walk(dep, [*path, name])
        done.add(name)

    for name in sorted(graph):
        walk(name, [])
