"""Orbax checkpoints: async saves, keep last K and best, exact resume onto any mesh."""

from jaxalign.checkpoint.manager import Checkpointer, restore_or_init

__all__ = ["Checkpointer", "restore_or_init"]
