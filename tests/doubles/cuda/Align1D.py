"""Test double of OpenTAD's CUDA-only `Align1D` extension (no CPU build; `import opentad.models`
imports it eagerly). AdaTAD never calls it; any use raises."""


def __getattr__(name):
    raise RuntimeError(f"Align1D.{name}: CUDA-only, absent in the CPU tests")
