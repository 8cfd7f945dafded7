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
