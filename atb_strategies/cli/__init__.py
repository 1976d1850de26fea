"""The ``atb`` command line."""
