"""`resin launcher PATH`: write a launcher that starts resin as fast as Python can.

The `resin` console script runs the interpreter with its `site` module, which
scans site-packages and runs every `.pth` file there (~10 ms on a 2-core
machine), and under `PYTHONDONTWRITEBYTECODE=1` an editable install is
compiled from source on every start. A port program pays that on every start,
and lacca 0.2.3 reads a process's output a fixed 50 ms after starting it.

The launcher is a Python script whose first line runs this interpreter in
isolated mode without `site` (`-IS`: no user site, no PYTHON* variables, no
`.pth` files), with the directories resin needs put on `sys.path` by hand.
Writing it also byte-compiles resin_py, so no start compiles anything.
"""

from __future__ import annotations

import contextlib
import os
import sys

# Linux reads at most this much of a script's first line (BINPRM_BUF_SIZE).
SHEBANG_MAX = 255
# Modules resin may import, whose directories the launcher puts on sys.path.
NEEDED = ("resin_py", "msgpack", "erlang")


class LauncherError(Exception):
    """The launcher cannot be written (the message says why)."""


def search_path() -> list[str]:
    """The directories that hold resin_py and its dependencies, in sys.path order."""
    import importlib.util

    dirs: list[str] = []
    for name in NEEDED:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            continue  # an optional dependency that is not installed
        origin = os.path.dirname(spec.origin)
        top = os.path.dirname(origin) if spec.submodule_search_locations else origin
        if top not in dirs:
            dirs.append(top)
    return dirs


def launcher_text(python: str, path: list[str]) -> str:
    """The launcher's source: `python` runs it, `path` goes first on sys.path."""
    shebang = f"#!{python} -IS"
    if len(shebang) > SHEBANG_MAX or any(c.isspace() for c in python):
        raise LauncherError(
            f"the interpreter path {python!r} cannot be used on a #! line "
            f"(it must have no spaces and at most {SHEBANG_MAX - 6} characters)")
    from resin_py import __version__

    return (
        f"{shebang}\n"
        f"# resin launcher, written by `resin launcher` (resin_py {__version__}).\n"
        "# -IS: isolated mode, no site module: start-up without scanning\n"
        "# site-packages. Write it again after moving or reinstalling resin.\n"
        "import sys\n"
        # After the standard library's directories: its modules are found
        # without looking through resin's first.
        f"sys.path += {path!r}\n"
        "from resin_py.cli import main\n"
        "sys.exit(main())\n"
    )


def write_launcher(dest: str) -> None:
    """Write the launcher at `dest` (mode 0755) and byte-compile resin_py."""
    import compileall

    import resin_py

    text = launcher_text(sys.executable, search_path())
    compileall.compile_dir(os.path.dirname(resin_py.__file__), quiet=1)
    tmp = f"{dest}.tmp{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o755)
        os.replace(tmp, dest)  # atomic: a resin starting meanwhile sees old or new
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise LauncherError(f"cannot write {dest}: {exc.strerror}") from exc
