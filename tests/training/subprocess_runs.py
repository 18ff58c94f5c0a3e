"""Running `jaxalign train` in a subprocess, and killing it with SIGKILL (or stopping it
with SIGTERM / SIGINT) mid-run."""

import os
import signal
import subprocess
import sys
import time

import jax

from tests.conftest import FAST_COMPILE

ENV = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count=1 {FAST_COMPILE}")
# The children share the tests' persistent compilation cache (tests/conftest.py).
if jax.config.jax_compilation_cache_dir:
  ENV.setdefault("JAX_COMPILATION_CACHE_DIR", jax.config.jax_compilation_cache_dir)


def run(command) -> subprocess.CompletedProcess:
  return subprocess.run(command, check=True, env=ENV, capture_output=True, text=True)


def kill_after(command, marker, timeout: float = 300.0) -> None:
  """Starts ``command``, SIGKILLs it as soon as path ``marker`` exists (a checkpoint)."""
  process = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
  deadline = time.time() + timeout
  while not marker.exists() and process.poll() is None and time.time() < deadline:
    time.sleep(0.02)
  process.send_signal(signal.SIGKILL)
  process.wait()


def run_unchecked(command, env=None) -> subprocess.CompletedProcess:
  """``command``'s result whatever its exit status."""
  return subprocess.run(command, env=env or ENV, capture_output=True, text=True)


def signal_when(command, ready, signum, timeout: float = 300.0):
  """Starts ``command``, sends ``signum`` once ``ready()`` is true (polled every 5 ms), and
  returns (exit status, stdout, stderr)."""
  process = subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
  deadline = time.time() + timeout
  while not ready() and process.poll() is None and time.time() < deadline:
    time.sleep(0.005)
  if process.poll() is None:
    process.send_signal(signum)
  out, err = process.communicate(timeout=timeout)
  return process.returncode, out, err


def train_command(task, output_dir, settings: dict, *flags) -> list[str]:
  """``python -m jaxalign.cli.main train TASK --no-progress --output-dir DIR FLAGS --set k=v``."""
  out = [sys.executable, "-m", "jaxalign.cli.main", "train", task, "--no-progress",
         "--output-dir", str(output_dir), *flags]
  for key, value in settings.items():
    out += ["--set", f"{key}={value}"]
  return out
