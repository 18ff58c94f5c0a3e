"""Running `jaxalign train` in a subprocess, and killing it with SIGKILL mid-run."""

import os
import signal
import subprocess
import time

ENV = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")


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
