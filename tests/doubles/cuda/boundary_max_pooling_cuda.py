"""Test double of OpenTAD's CUDA-only `boundary_max_pooling_cuda` extension (no CPU build;
`import opentad.models` imports it eagerly). AdaTAD never calls it; any use raises."""


def __getattr__(name):
    raise RuntimeError(f"boundary_max_pooling_cuda.{name}: CUDA-only, absent in the CPU tests")
