"""The resin entry point (the runtime lives in `resin_py.runtime`)."""

from resin_py.runtime.server import main, serve

__all__ = ["main", "serve"]
