"""Reproductions of paper figures on toy problems, built on jaxalign's losses and optimisers.

Each module is one command, ``python -m experiments.<name>``, and one function,
``run(config) -> dict``; see experiments/README.md and docs/reproductions.md.
"""
