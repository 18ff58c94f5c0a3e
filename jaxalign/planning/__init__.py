"""Memory planning: a run's programs compiled for a TPU topology (or this host's CPUs) with
abstract params, and per-device memory by category against the chip's HBM
(``jaxalign plan``, docs/tpu.md)."""

from jaxalign.planning.chips import HBM_GIB, Topology, parse_topology
from jaxalign.planning.memory import format_report
from jaxalign.planning.plan import plan

__all__ = ["HBM_GIB", "Topology", "format_report", "parse_topology", "plan"]
