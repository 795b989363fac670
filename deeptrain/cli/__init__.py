"""The ``deeptrain`` command line: a thin layer over the SDK."""
