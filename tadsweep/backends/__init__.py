"""Backends: what trains and detects -- `opentad` (upstream OpenTAD in its container, on GPUs) and
`demo` (a small real detector on CPU). Both write the same files in OpenTAD's formats."""
