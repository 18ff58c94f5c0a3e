"""Where a run came from, saved as the ``provenance:`` section of ``output_dir/config.yaml``:
the jaxalign version and git commit, the command line, the time, the sha256 of every local
data file and the file sizes / mtimes of the input model folders (a rerun whose inputs
changed is not resumed: ``training.run_dir``). ``load_config`` ignores the section, so config.yaml stays a valid
``--config``."""

from __future__ import annotations

import datetime
import functools
import hashlib
import os
import shlex
import subprocess
import sys


@functools.lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
  del size, mtime_ns  # cache key: the file as it is now
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def sha256_file(path: str) -> str:
  """The file's sha256 (hashed once per process while its size and mtime stay the same)."""
  stat = os.stat(path)
  return _sha256(os.path.abspath(path), stat.st_size, stat.st_mtime_ns)


def git_commit() -> str | None:
  """The commit of the jaxalign checkout that is running (``+dirty`` with local changes);
  None when it is not a git checkout (an installed wheel) or git is missing."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  try:
    run = lambda *args: subprocess.run(["git", "-C", root, *args], capture_output=True,
                                       text=True, timeout=10)
    head = run("rev-parse", "HEAD")
    if head.returncode != 0:
      return None
    dirty = run("status", "--porcelain", "--untracked-files=no").stdout.strip()
    return head.stdout.strip() + ("+dirty" if dirty else "")
  except (OSError, subprocess.SubprocessError):
    return None


def command_line() -> str:
  """How this process was started, as a shell line (``jaxalign ...`` for the CLI)."""
  program = os.path.basename(sys.argv[0]) if sys.argv else ""
  if program in ("jaxalign", "main.py", "__main__.py"):
    return shlex.join(["jaxalign", *sys.argv[1:]])
  return shlex.join(sys.argv)


def _data_paths(run) -> list[str]:
  paths = []
  for name, value in vars(run.data).items():
    if "file" not in name or value is None:
      continue
    for path in (value if isinstance(value, (list, tuple)) else [value]):
      path = str(path)
      if "://" not in path and os.path.isfile(path):
        paths.append(path)
  return paths


MODEL_KEYS = ("model.path", "model.init_from", "model.reference_from", "online.reward_model")


def data_files(run) -> dict:
  """``{absolute path: {"sha256", "bytes"}}`` of the run's local data files."""
  return {os.path.abspath(p): {"sha256": sha256_file(p), "bytes": os.path.getsize(p)}
          for p in _data_paths(run)}


def model_folders(run) -> dict:
  """``{key: {"path", "files": {name: [bytes, mtime_ns]}}}`` of the run's local input model
  folders: a folder rewritten since (an SFT run trained again) shows up as changed."""
  out = {}
  for key in MODEL_KEYS:
    section, name = key.split(".")
    path = getattr(getattr(run, section), name, None)
    if not path or "://" in str(path) or not os.path.isdir(str(path)):
      continue
    files = {}
    for entry in sorted(os.scandir(path), key=lambda e: e.name):
      if entry.is_file():
        stat = entry.stat()
        files[entry.name] = [stat.st_size, stat.st_mtime_ns]
    out[key] = {"path": os.path.abspath(str(path)), "files": files}
  return out


def input_changes(saved: dict | None, run) -> list[str]:
  """What changed in the run's inputs since ``saved`` (a config.yaml provenance section):
  a data file's contents, an input model folder's files."""
  if not saved:
    return []
  changes = []
  old_files, new_files = saved.get("data_files") or {}, data_files(run)
  for path, now in new_files.items():
    before = old_files.get(path)
    if before and before.get("sha256") != now["sha256"]:
      changes.append(f"{path}: contents changed (sha256 {before.get('sha256', '?')[:12]} -> "
                     f"{now['sha256'][:12]})")
  old_models, new_models = saved.get("model_folders") or {}, model_folders(run)
  for key, now in new_models.items():
    before = old_models.get(key)
    if before and before.get("path") == now["path"] and before.get("files") != now["files"]:
      changes.append(f"{key}={now['path']}: the folder changed since this run started")
  return changes


def provenance(run) -> dict:
  from jaxalign import __version__
  import jax
  return {
      "jaxalign_version": __version__,
      "git_commit": git_commit(),
      "command": command_line(),
      "cwd": os.getcwd(),
      "python": sys.version.split()[0],
      "jax_version": jax.__version__,
      "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "data_files": data_files(run),
      "model_folders": model_folders(run),
  }
