"""Builds the C++ core (csrc/) as pccheck._core.

Portable flags only: no -march=native; hardware CRC32C is chosen at run time.
"""
import glob

from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import setup

sources = sorted(glob.glob("csrc/*.cc"))

setup(
    ext_modules=[
        Pybind11Extension(
            "pccheck._core",
            sources,
            cxx_std=17,
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-pthread"],
            extra_link_args=["-pthread"],
        )
    ],
    cmdclass={"build_ext": build_ext},
)
