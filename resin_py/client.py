"""Another name for `resin_py.testing`: `ResinClient`, the Python client for resin."""

from resin_py import testing
from resin_py.testing import *  # noqa: F403 (the same names, listed in testing.__all__)

__all__ = testing.__all__
