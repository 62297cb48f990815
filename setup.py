"""The compiled kernels of tadsweep/detections (metadata: pyproject.toml).

`pip install -e .` (make setup) builds them next to their sources; `python setup.py build_ext
--inplace` rebuilds them after an edit. No -ffast-math and no fused multiply-adds: the NMS
kernels must round exactly as OpenTAD's C++ does."""

from pathlib import Path

from setuptools import Extension, setup

FLAGS = ["-O2", "-std=c++17", "-ffp-contract=off", "-fno-fast-math"]

setup(
    ext_modules=[
        Extension(
            f"tadsweep.detections.{source.stem}",
            [str(source)],
            depends=["tadsweep/detections/_buffers.h"],
            extra_compile_args=FLAGS,
            language="c++",
        )
        for source in sorted(Path("tadsweep/detections").glob("_*.cpp"))
    ]
)
