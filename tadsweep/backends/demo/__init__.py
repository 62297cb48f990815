"""Embedded demo backend: the whole study on a laptop CPU, in OpenTAD's file formats
(`python -m tadsweep.backends.demo --help`)."""
