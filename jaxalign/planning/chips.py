"""The chips a plan compiles for: ``--topology`` parsed, its devices, and each chip's HBM.

``v5e:4x4`` (a TPU slice, compiled by libtpu with no TPU present:
``jax.experimental.topologies``), or ``cpu`` / ``cpu:8`` (this host's CPU devices: a CPU
compile, whose numbers are the host compiler's, not a TPU's).
"""

from __future__ import annotations

import dataclasses
import os
import re

GIB = 2 ** 30
# HBM per chip (Cloud TPU system architecture pages). A v5p chip is one JAX device
# (megacore), as is a v4 chip.
HBM_GIB = {"v4": 32, "v5e": 16, "v5p": 95, "v6e": 32}
_TPU = re.compile(r"^(v4|v5e|v5p|v6e):(\d+(?:x\d+){1,2})$")
_CPU = re.compile(r"^cpu(?::(\d+))?$")


@dataclasses.dataclass(frozen=True)
class Topology:
  """A parsed ``--topology``: ``platform`` "tpu" or "cpu", the chip ("v5e", "cpu"), the
  slice shape ("4x4"; "" for cpu), and the number of devices (None: all host CPUs)."""

  text: str
  platform: str
  chip: str
  shape: str
  num_devices: int | None

  @property
  def label(self) -> str:
    if self.platform == "cpu":
      return f"{self.text} (a CPU compile: host-compiler numbers, not a TPU's)"
    return f"{self.text} ({self.num_devices} TPU {self.chip} chips, compiled by libtpu)"


def parse_topology(text: str) -> Topology:
  """``v5e:4x4`` / ``v5p:2x2x1`` / ``cpu`` / ``cpu:8``; a ValueError (one line) otherwise."""
  text = text.strip()
  cpu = _CPU.match(text)
  if cpu:
    count = int(cpu.group(1)) if cpu.group(1) else None
    if count is not None and count < 1:
      raise ValueError(f"--topology {text}: the device count must be >= 1")
    return Topology(text, "cpu", "cpu", "", count)
  tpu = _TPU.match(text)
  if not tpu:
    raise ValueError(f"--topology {text!r} is not a topology: use CHIP:SHAPE with CHIP one of "
                     f"{', '.join(HBM_GIB)} (e.g. v5e:4x4, v5p:2x2x1), or cpu / cpu:N")
  chips = 1
  for size in tpu.group(2).split("x"):
    chips *= int(size)
  if chips < 1:
    raise ValueError(f"--topology {text}: every dimension of the slice must be >= 1")
  return Topology(text, "tpu", tpu.group(1), tpu.group(2), chips)


def prepare_host(topology: Topology) -> None:
  """Before JAX starts: ``cpu:N`` asks XLA for N host devices; a TPU topology lets libtpu
  load beside another process that holds it (a compile needs no chip to itself) and keeps
  JAX from looking for TPU chips here (the topology's devices are compile-only), without
  the persistent compilation cache (no client to load its entries into)."""
  if topology.platform == "tpu":
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax  # a topology's programs cannot be reloaded from the persistent cache
    jax.config.update("jax_enable_compilation_cache", False)
    return
  if topology.num_devices is None:
    return
  flags = os.environ.get("XLA_FLAGS", "")
  flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", flags)
  os.environ["XLA_FLAGS"] = (f"{flags} --xla_force_host_platform_device_count="
                             f"{topology.num_devices}").strip()


def topology_devices(topology: Topology) -> list:
  """The devices to build the mesh on. TPU: ``get_topology_desc`` (libtpu, no TPU needed)."""
  import jax
  if topology.platform == "cpu":
    devices = jax.devices("cpu")
    count = topology.num_devices or len(devices)
    if count > len(devices):
      raise ValueError(f"--topology {topology.text}: this process has {len(devices)} CPU "
                       f"devices (XLA_FLAGS was set before JAX started?)")
    return devices[:count]
  try:
    import libtpu  # noqa: F401
  except ImportError:
    raise ValueError(f"--topology {topology.text} needs libtpu: pip install "
                     f"'jaxalign[tpu]' (or use --topology cpu:N)") from None
  from jax.experimental import topologies
  try:
    return list(topologies.get_topology_desc(topology.text, "tpu").devices)
  except Exception as error:  # noqa: BLE001 - libtpu's message, on one line
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    raise ValueError(f"--topology {topology.text}: libtpu does not know it ({first})") from None


def hbm_bytes(topology: Topology, hbm_gib: float | None = None) -> int | None:
  """Per-device memory to plan against: ``--hbm-gib`` if given, else the chip's HBM (None
  for a CPU compile without ``--hbm-gib``: nothing to fit against)."""
  if hbm_gib is not None:
    if not hbm_gib > 0:
      raise ValueError(f"--hbm-gib must be > 0, got {hbm_gib}")
    return int(hbm_gib * GIB)
  gib = HBM_GIB.get(topology.chip)
  return None if gib is None else gib * GIB
