"""``jaxalign eval --frontier``: several policies on one reward-KL table.

``jaxalign eval --frontier [NAME=]DIR ... --reference REF [--reward-model RM]
[--prompts-file F] [--best-of-n 1,4,16] [--output table.csv|table.json]`` samples every
policy and the reference on the same prompts with the same key and prints
``jaxalign.eval.frontier.frontier_table``: gold reward (synthetic task), reward-model score,
KL to the reference, entropy and length, mean and standard error over prompts, and which
policies lie on the upper concave hull. ``--best-of-n`` adds the best-of-n rows against
the reward model (KL in closed form).

Prompts: ``--prompts-file``, else the synthetic task's held-out prompts when the first
policy's run config (its ``run_config.yaml``) trained on ``data.source=synthetic``
(``data.num_eval`` of them; ``--set`` overrides that config). Every folder, the reward
model and the prompt budget are checked before any weights load.
"""

from __future__ import annotations

import csv
import json
import os

import jax
import numpy as np

from jaxalign.cli.inspect_cmds import policy_folder
from jaxalign.config import ConfigError, RunConfig, load_config
from jaxalign.eval.file_prompts import batches, check_budget, encode_prompts, read_prompts
from jaxalign.eval.frontier import (best_of_n, format_frontier_table, frontier_table,
                                   mark_frontier)
from jaxalign.models import load_model
from jaxalign.training import setup
from jaxalign.training.compat import check_reward_model, check_same_architecture
from jaxalign.training.tokenizers import model_tokenizer


def parse_entries(entries: list[str]) -> dict[str, str]:
  """``[NAME=]DIR`` -> {name: folder}; an unnamed ``.../<run>/model`` is called ``<run>``."""
  out = {}
  for entry in entries:
    name, sep, folder = entry.partition("=")
    if not sep:
      folder = entry.rstrip("/")
      parent, leaf = os.path.split(folder)
      name = os.path.basename(parent) if leaf == "model" and parent else folder
    if not name or not folder:
      raise ConfigError(f"--frontier {entry!r}: expected DIR or NAME=DIR")
    if name in out:
      raise ConfigError(f"--frontier: two policies are called {name!r}; name them NAME=DIR")
    out[name] = folder
  return out


def parse_ns(text: str | None) -> list[int]:
  if not text:
    return []
  try:
    ns = sorted({int(n) for n in text.split(",")})
  except ValueError:
    raise ConfigError(f"--best-of-n {text!r}: expected comma-separated integers like 1,4,16")
  if ns[0] < 1:
    raise ConfigError(f"--best-of-n {text!r}: every n must be >= 1")
  return ns


def _run_config(folder: str, overrides: list[str]) -> RunConfig | None:
  from jaxalign.cli.eval_cmd import recorded_config
  try:
    path = recorded_config(folder)
  except ConfigError:
    return None
  return load_config(RunConfig, path, list(overrides))


def _check_same_task(run: RunConfig, folders: dict[str, str]) -> None:
  """Every folder that records a synthetic-task run trained on ``run``'s task (the gold
  reward of another ``data.task_seed`` scores a different language)."""
  for key, folder in folders.items():
    theirs = _run_config(folder, [])
    if (theirs is not None and theirs.data.source == "synthetic"
        and theirs.data.task_seed != run.data.task_seed):
      raise ConfigError(f"{key}={folder} trained on the synthetic task with data.task_seed="
                        f"{theirs.data.task_seed}, the table scores data.task_seed="
                        f"{run.data.task_seed}: every policy must come from the same task")


def _write(path: str, rows: list[dict]) -> None:
  if path.lower().endswith(".csv"):
    keys = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="") as f:
      writer = csv.DictWriter(f, fieldnames=keys)
      writer.writeheader()
      writer.writerows(rows)
  else:
    with open(path, "w") as f:
      json.dump({"rows": rows}, f, indent=2)


def run_frontier(entries: list[str], reference_dir: str | None, reward_model: str | None = None,
                 prompts_file: str | None = None, overrides: list[str] = (),
                 best_of: str | None = None, max_new_tokens: int | None = None,
                 temperature: float = 1.0, chat: bool = False, seed: int = 0,
                 batch_size: int = 32, output: str | None = None) -> list[dict]:
  """The rows of the module docstring's table (also written to ``output``)."""
  if not reference_dir:
    raise ConfigError("--frontier needs --reference: every KL is measured to one reference")
  if not temperature > 0:
    raise ConfigError(f"--temperature must be > 0 to estimate a KL from samples, got "
                      f"{temperature}")
  folders = parse_entries(entries)
  ns = parse_ns(best_of)
  config, load_reference = policy_folder(reference_dir, "--reference")
  loaders = {}
  for name, folder in folders.items():
    policy_config, loaders[name] = policy_folder(folder, f"--frontier {name}")
    check_same_architecture(config, f"--reference {reference_dir}", policy_config,
                            f"--frontier {name}={folder}")
  run = _run_config(next(iter(folders.values())), overrides)
  rm_path = reward_model or (run.online.reward_model if run else None)
  if ns and not rm_path:
    raise ConfigError("--best-of-n ranks samples by a reward model: pass --reward-model")
  gold_reward = None
  if prompts_file:
    tokenizer = model_tokenizer(reference_dir)
    encoded = encode_prompts(read_prompts(prompts_file), tokenizer, chat)
    new_tokens = max_new_tokens or 64
    check_budget(config, encoded, new_tokens, f"--reference {reference_dir}")
    tokens, mask = next(batches(encoded, tokenizer.pad_id, len(encoded)))[1:]
    pad_id, eos_id = tokenizer.pad_id, tokenizer.eos_id
  elif run is not None and run.data.source == "synthetic":
    _check_same_task(run, {"--reference": reference_dir, **{
        f"--frontier {name}": folder for name, folder in folders.items()}})
    task = setup.synthetic_task(run)
    prompts = task.prompt_rows(run.data.num_eval, seed=99)  # as `jaxalign eval` samples
    batch = prompts.batch(np.arange(len(prompts)), prompts.max_length)
    tokens, mask = batch.tokens, batch.attention_mask
    new_tokens = max_new_tokens or task.config.max_response_length
    pad_id, eos_id, gold_reward = 0, config.eos_token_id, task.gold_reward
  else:
    raise ConfigError("--frontier: no prompts; pass --prompts-file (the first policy's run "
                      "config is not a synthetic-task run)")
  if rm_path:
    key = "--reward-model" if reward_model else "online.reward_model"
    check_reward_model(config, f"--reference {reference_dir}", rm_path, key,
                       scored_length=tokens.shape[1] + new_tokens)
  elif gold_reward is None:
    raise ConfigError("--frontier on --prompts-file needs a reward: pass --reward-model")
  rm = load_model(rm_path)[:2] if rm_path else None
  rng = jax.random.PRNGKey(seed)
  kwargs = dict(max_new_tokens=new_tokens, eos_id=eos_id, pad_id=pad_id,
                gold_reward=gold_reward, temperature=temperature)
  rows = frontier_table(config, {name: load() for name, load in loaders.items()},
                        load_reference(), tokens, mask, rng, reward_model=rm,
                        batch_size=batch_size, **kwargs)
  if ns:
    rows = mark_frontier(rows + best_of_n(
        config, load_reference(), tokens, mask, jax.random.fold_in(rng, 1), rm, ns,
        batch_size=max(1, 4 * batch_size // max(ns)), **kwargs),
        "gold_reward" if gold_reward is not None else "rm_score")
  if output:
    _write(output, rows)
  print(format_frontier_table(rows))
  return rows
