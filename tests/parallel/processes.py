"""Launching ``jaxalign`` commands as several gloo-joined CPU processes (and as one process
for reference), for the multi-process tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import jax

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TIMEOUT_S = 240


def gloo_unavailable() -> str | None:
  """Why cross-process CPU collectives cannot run here, or None when they can."""
  try:
    from jax._src.lib import _jax
  except ImportError as error:
    return f"cannot import jaxlib's _jax: {error}"
  if not hasattr(_jax, "make_gloo_tcp_collectives"):
    return f"jaxlib {jax.__version__} was built without gloo CPU collectives"
  return None


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def train_command(task: str, output_dir, settings: dict) -> list[str]:
  command = [sys.executable, "-m", "jaxalign.cli.main", "train", task, "--no-progress",
             "--output-dir", str(output_dir)]
  for key, value in settings.items():
    command += ["--set", f"{key}={value}"]
  return command


def env(devices: int, **extra) -> dict:
  env = {k: v for k, v in os.environ.items() if not k.startswith("JAXALIGN_")}
  # The children share the tests' persistent compilation cache (tests/conftest.py).
  env.setdefault("JAX_COMPILATION_CACHE_DIR", jax.config.jax_compilation_cache_dir or "")
  env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
  env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
             JAX_PLATFORMS="cpu", PYTHONPATH=ROOT, **extra)
  return {k: v for k, v in env.items() if v != ""}


def start(command, environment) -> subprocess.Popen:
  return subprocess.Popen(command, env=environment, cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def finish(processes: list[subprocess.Popen], what: str) -> list[str]:
  """Waits for all (killing every one if any hangs); the stdout of each; fails with the
  stderr tails if one exits non-zero."""
  deadline = time.time() + TIMEOUT_S
  outputs, failed = [], []
  for index, process in enumerate(processes):
    try:
      out, err = process.communicate(timeout=max(deadline - time.time(), 1))
    except subprocess.TimeoutExpired:
      for p in processes:
        p.kill()
      out, err = process.communicate()
      failed.append(f"process {index} timed out after {TIMEOUT_S}s\n{err[-3000:]}")
      break
    outputs.append(out)
    if process.returncode != 0:
      failed.append(f"process {index} exited {process.returncode}\n{err[-3000:]}")
  assert not failed, f"{what}:\n" + "\n".join(failed)
  return outputs


def two_processes(command: list[str], devices_each: int = 4) -> list[subprocess.Popen]:
  """``command`` as processes 0 and 1 of a two-process run joined over gloo."""
  address = f"127.0.0.1:{free_port()}"
  return [start(command, env(devices_each, JAXALIGN_COORDINATOR_ADDRESS=address,
                             JAXALIGN_NUM_PROCESSES="2", JAXALIGN_PROCESS_ID=str(i),
                             JAXALIGN_CPU_COLLECTIVES="gloo"))
          for i in range(2)]
