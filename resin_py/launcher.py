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

`python -m resin_py.launcher --bundle DIR` (lacca's `mix compile` runs it for
its priv/resin) writes a relocatable bundle instead: resin_py and msgpack
copied into DIR and byte-compiled, with a `/bin/sh` launcher `DIR/resind`
that finds them relative to itself, so that a `mix release` carries resin.
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
        with open(tmp, "x", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o755)
        os.replace(tmp, dest)  # atomic: a resin starting meanwhile sees old or new
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise LauncherError(f"cannot write {dest}: {exc.strerror}") from exc


# --- a relocatable bundle (lacca's priv/resin, for `mix release`) ----------------

# The bundle's entry script: puts its own directory (resin_py and msgpack
# copied beside it) on sys.path. `__file__` of a script is absolute, and no
# `os` import is needed.
_BUNDLE_ENTRY = """\
# resin's entry in a bundle written by resin_py.launcher (resin_py {version}).
import sys
sys.path.append(__file__.rpartition("/")[0])
from resin_py.cli import main
sys.exit(main())
"""

# The bundle's launcher: a /bin/sh script (dash: ~1 ms), so that it can fall
# back from the interpreter that built the bundle to one found on the PATH
# with the same minor version (the C extension and the .pyc files are built
# for it). Paths are relative to the launcher, which may move (a release).
_BUNDLE_LAUNCHER = """\
#!/bin/sh
# resin launcher, written by resin_py.launcher (resin_py {version}) for lacca's
# priv/resin: runs the resin bundled beside it with python{minor} in isolated
# mode without site (-IS). It may be moved with its directory.
case $0 in */*) d=${{0%/*}} ;; *) d=. ;; esac
p={python}
[ -x "$p" ] || p=python{minor}
exec "$p" -IS "$d/{lib}/resind.py" "$@"
"""

_BUNDLE_SKIP = ("__pycache__", "*.pyc", "*.tmp*", "*.egg-info")


def _bundle_lib_of(launcher: str) -> str | None:
    """The lib directory an existing bundle launcher runs, if any."""
    try:
        with open(launcher) as f:
            text = f.read()
    except OSError:
        return None
    marker = '"$d/'
    start = text.find(marker)
    if start < 0:
        return None
    start += len(marker)
    end = text.find("/", start)
    return text[start:end] if end > start else None


def write_bundle(dest: str) -> str:
    """Copy resin_py and msgpack (if installed) into `dest/lib-<hash>`, compile
    them, write the launcher `dest/resind` and return its path.

    erlang-py is left out: resin only uses it for tools and tests. A bundle
    built anew goes beside the previous one and the launcher is replaced
    atomically, so a resin starting meanwhile runs either; older ones go.
    """
    import compileall
    import hashlib
    import importlib.util
    import py_compile
    import shlex
    import shutil

    import resin_py

    minor = f"{sys.version_info.major}.{sys.version_info.minor}"
    python = os.path.realpath(sys.executable)
    sources = [os.path.dirname(resin_py.__file__)]
    spec = importlib.util.find_spec("msgpack")
    if spec is not None and spec.origin is not None and spec.submodule_search_locations:
        sources.append(os.path.dirname(spec.origin))

    os.makedirs(dest, exist_ok=True)
    tmp = os.path.join(dest, f"tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for src in sources:
            shutil.copytree(src, os.path.join(tmp, os.path.basename(src)),
                            ignore=shutil.ignore_patterns(*_BUNDLE_SKIP))
        with open(os.path.join(tmp, "resind.py"), "w") as f:
            f.write(_BUNDLE_ENTRY.format(version=resin_py.__version__))
        digest = hashlib.sha256(python.encode())
        for root, dirs, files in os.walk(tmp):
            dirs.sort()
            for name in sorted(files):
                path = os.path.join(root, name)
                digest.update(os.path.relpath(path, tmp).encode() + b"\0")
                with open(path, "rb") as data:
                    digest.update(data.read())
        # Unchecked hashes: the .pyc files stay valid when a release copy
        # changes the sources' mtimes, and nothing is compiled at start.
        if not compileall.compile_dir(tmp, quiet=1, workers=1,
                                      invalidation_mode=py_compile.PycInvalidationMode
                                      .UNCHECKED_HASH):
            raise LauncherError(f"cannot byte-compile the bundle in {tmp}")
        lib = f"lib-{digest.hexdigest()[:12]}"
        final = os.path.join(dest, lib)
        try:
            os.rename(tmp, final)
        except OSError:
            if not os.path.isdir(final):
                raise
            shutil.rmtree(tmp)  # the same bundle is there already
        launcher = os.path.join(dest, "resind")
        previous = _bundle_lib_of(launcher)
        text = _BUNDLE_LAUNCHER.format(version=resin_py.__version__, minor=minor,
                                       python=shlex.quote(python), lib=lib)
        tmp_launcher = f"{launcher}.tmp{os.getpid()}"
        with open(tmp_launcher, "w") as out:
            out.write(text)
        os.chmod(tmp_launcher, 0o755)
        os.replace(tmp_launcher, launcher)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise LauncherError(f"cannot write the bundle in {dest}: {exc}") from exc
    import time

    for name in os.listdir(dest):
        path = os.path.join(dest, name)
        if name.startswith("tmp"):  # another writer's, unless it is stale
            with contextlib.suppress(OSError):
                if os.stat(path).st_mtime < time.time() - 600:
                    shutil.rmtree(path, ignore_errors=True)
        elif name.startswith("lib-") and name not in (lib, previous):
            shutil.rmtree(path, ignore_errors=True)
    return launcher


def _main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "--bundle":
        print("usage: python -m resin_py.launcher --bundle DIR", file=sys.stderr)
        return 2
    try:
        print(write_bundle(argv[1]))
    except LauncherError as exc:
        print(f"resin bundle: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
