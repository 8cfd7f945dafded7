"""Only the optional C extension; everything else is in pyproject.toml.

resin_py._spawn (clone + exec with every containment step, see
resin_py/_spawn.c) is optional: without a C compiler or Python headers the
build goes on and resin uses its pure-Python spawner.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "resin_py._spawn",
            sources=["resin_py/_spawn.c"],
            optional=True,
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-missing-field-initializers"],
        )
    ]
)
