"""jaxalign: pure-JAX alignment of language models to human preferences."""

__version__ = "0.1.0"
