"""What a run does with an existing ``output_dir``: start fresh, resume, report that it is
complete, or stop with a one-line error, decided before any data is built.

A run resumes only when its resolved config matches the ``config.yaml`` saved there and its
inputs are unchanged (data files by sha256, input model folders by their files' sizes and
mtimes, from the saved provenance), up to the keys that may change on a resume (``RESUMABLE``: more ``loop.steps``, the log / eval /
checkpoint cadence, the mesh, ``optimizer.total_steps`` under a constant schedule, where it
is unused). Otherwise the error names the keys that differ and offers ``--overwrite`` (clear
the run's outputs and start fresh) or ``--resume`` (continue from the checkpoint with the new
config anyway). A finished run (``eval.json`` and ``model/``) rerun with the same config and
steps changes nothing. Without a checkpoint, a matching unfinished run starts fresh with its
old outputs cleared (no duplicate steps in ``metrics.jsonl``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil

import jax
import yaml

from jaxalign.config import ConfigError, RunConfig, from_dict
from jaxalign.config.provenance import input_changes
from jaxalign.config.validate import flat_config

# Everything a run writes (removed by --overwrite; tfds/, the data cache, is kept).
RUN_OUTPUTS = ("config.yaml", "metrics.jsonl", "tensorboard", "eval.json", "model",
               "checkpoints", "data_report.json", "nan_debug")
RESUMABLE = ("output_dir", "loop.steps", "loop.log_every", "loop.eval_every",
             "loop.checkpoint_every", "loop.keep_checkpoints", "mesh.")  # "x.": a section
AUTO, RESUME, OVERWRITE = "auto", "resume", "overwrite"


@dataclasses.dataclass(frozen=True)
class RunStart:
  mode: str                  # "fresh", "resume" or "complete"
  message: str
  step: int | None = None    # the checkpoint step a resume starts from
  saved_eval: dict | None = None  # a complete run's eval.json


def config_differences(saved: RunConfig, run: RunConfig) -> list[str]:
  """``key: old -> new`` for every key that differs, except those a resume may change."""
  a, b = flat_config(saved), flat_config(run)
  constant = saved.optimizer.schedule == run.optimizer.schedule == "constant"
  out = []
  for key in sorted(set(a) | set(b)):
    if any(key == k or (k.endswith(".") and key.startswith(k)) for k in RESUMABLE):
      continue
    if key == "optimizer.total_steps" and constant:
      continue
    old, new = a.get(key), b.get(key)
    if old != new and not (_is_nan(old) and _is_nan(new)):
      out.append(f"{key}: {old!r} -> {new!r}")
  return out


def _is_nan(value) -> bool:
  return isinstance(value, float) and math.isnan(value)


def read_saved_config(path: str) -> tuple[RunConfig, dict | None]:
  """(config, provenance section) of a run's config.yaml."""
  with open(path) as f:
    data = yaml.safe_load(f) or {}
  saved_provenance = data.pop("provenance", None)
  return from_dict(RunConfig, data, where=path), saved_provenance


def latest_checkpoint(output_dir: str) -> int | None:
  """The newest committed orbax step under ``output_dir/checkpoints`` (orbax renames a step
  folder into place once written, so a bare number is complete)."""
  folder = os.path.join(output_dir, "checkpoints")
  if not os.path.isdir(folder):
    return None
  steps = [int(name) for name in os.listdir(folder)
           if name.isdigit() and os.path.isdir(os.path.join(folder, name))]
  return max(steps) if steps else None


def _present(output_dir: str, names=RUN_OUTPUTS) -> list[str]:
  return [n for n in names if os.path.exists(os.path.join(output_dir, n))]


def _remove(output_dir: str, names) -> None:
  for name in names:
    path = os.path.join(output_dir, name)
    if os.path.isdir(path):
      shutil.rmtree(path)
    elif os.path.exists(path):
      os.remove(path)


def _shorten(items: list[str], most: int = 6) -> str:
  shown = "; ".join(items[:most])
  return shown + (f"; and {len(items) - most} more" if len(items) > most else "")


def _saved_eval(output_dir: str) -> dict:
  with open(os.path.join(output_dir, "eval.json")) as f:
    values = json.load(f)
  return {k: (math.nan if v is None else v) for k, v in values.items()}


def decide(run: RunConfig, on_existing: str = AUTO) -> RunStart:
  """The decision for ``run.output_dir`` (reads only); raises ConfigError when the folder
  holds another run and neither --overwrite nor --resume was given."""
  if on_existing not in (AUTO, RESUME, OVERWRITE):
    raise ValueError(f"on_existing must be auto, resume or overwrite, got {on_existing!r}")
  out = run.output_dir
  if on_existing == OVERWRITE:
    removed = _present(out)
    return RunStart("fresh", "starting fresh" + (f" (--overwrite: removed "
                                                 f"{', '.join(removed)})" if removed else ""))
  step = latest_checkpoint(out)
  saved_path = os.path.join(out, "config.yaml")
  if not os.path.exists(saved_path):
    left = _present(out)
    if left and on_existing != RESUME:
      raise ConfigError(f"output_dir={out} holds run outputs ({', '.join(left)}) but no "
                        f"config.yaml: pass --overwrite to start fresh, or choose another "
                        f"output_dir")
    return _resume_or_fresh(run, step, on_existing, complete=False)
  try:
    saved, saved_provenance = read_saved_config(saved_path)
    differences = config_differences(saved, run) + input_changes(saved_provenance, run)
  except (ConfigError, OSError, yaml.YAMLError, TypeError) as error:
    saved, differences = None, [f"config.yaml cannot be read as this version's config "
                                f"({str(error).splitlines()[0]})"]
  at = f" from step {step}" if step is not None else ""
  if differences and on_existing != RESUME:
    raise ConfigError(f"output_dir={out} holds a run with another config or inputs ("
                      f"{_shorten(differences)}): pass --overwrite to start fresh, or "
                      f"--resume to continue it{at} with the new config")
  complete = all(os.path.exists(os.path.join(out, n)) for n in ("eval.json", "model"))
  if complete and saved is not None and saved.loop.steps == run.loop.steps:
    return RunStart("complete", f"run complete: {out} already holds the {run.loop.steps} "
                    f"steps of this config; nothing to do (--overwrite to train again)",
                    step=step, saved_eval=_saved_eval(out))
  return _resume_or_fresh(run, step, on_existing, complete)


def _resume_or_fresh(run: RunConfig, step: int | None, on_existing: str,
                     complete: bool) -> RunStart:
  out = run.output_dir
  if step is not None:
    if step > run.loop.steps:
      raise ConfigError(f"loop.steps={run.loop.steps} is below the checkpoint at step {step} "
                        f"in {out}: raise loop.steps, or pass --overwrite to start fresh")
    if step == run.loop.steps and complete:
      return RunStart("complete", f"run complete: {out} holds a finished run of "
                      f"{step} steps; nothing to do (--overwrite to train again)", step=step,
                      saved_eval=_saved_eval(out))
    return RunStart("resume", f"resuming from step {step}", step=step)
  if complete:
    raise ConfigError(f"loop.steps={run.loop.steps}: the finished run in {out} has no "
                      f"checkpoint to continue from (loop.checkpoint_every=0); pass "
                      f"--overwrite to train again from the start")
  if on_existing == RESUME and os.path.exists(os.path.join(out, "config.yaml")):
    raise ConfigError(f"--resume: {out} has no checkpoint to resume from; rerun without "
                      f"--resume to start fresh")
  left = _present(out)
  return RunStart("fresh", "starting fresh" + (" (no checkpoint to resume from: cleared "
                                               f"{', '.join(left)})" if left else ""))


def prepare(run: RunConfig, on_existing: str = AUTO) -> RunStart:
  """``decide``, then (process 0) clear what a fresh start replaces and drop a resumed run's
  stale eval.json; every process gets the same decision (the folder is shared)."""
  start = decide(run, on_existing)
  _barrier("output_dir decided")
  if jax.process_index() == 0 and start.mode != "complete":
    if start.mode == "fresh":
      _remove(run.output_dir, RUN_OUTPUTS)
    else:
      _remove(run.output_dir, ("eval.json",))  # rewritten when the resumed run ends
  _barrier("output_dir ready")
  return start


def _barrier(name: str) -> None:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(f"jaxalign: {name}")
