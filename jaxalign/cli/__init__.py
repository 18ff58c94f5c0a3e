"""The ``jaxalign`` command line."""
