"""Building a run's pieces from its config: data rows, the model, the reference.

Data rows are the data module's ``SFTRows`` / ``PreferenceRows``: from the built-in synthetic
task, or from local JSONL/Parquet files through the TFDS builder and a tokenizer.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxalign import data as D
from jaxalign.config import RunConfig
from jaxalign.models import (CheckpointError, TransformerConfig, init_params, load_model,
                             load_pretrained, tiny_gpt2, tiny_llama)

_PRESETS = {"tiny_gpt2": tiny_gpt2, "tiny_llama": tiny_llama}


def synthetic_task(run: RunConfig) -> D.SyntheticTask:
  return D.SyntheticTask(D.SyntheticTaskConfig(seed=run.data.task_seed))


def build_rows(run: RunConfig, split: str):
  """(rows, report) of ``split`` ("train" or "eval") for the run's task."""
  spec = run.data
  kind = "sft" if run.task == "sft" else "preference"
  if spec.source == "synthetic":
    task = synthetic_task(run)
    num, seed = (spec.num_train, 1) if split == "train" else (spec.num_eval, 2)
    if kind == "sft":
      return task.sft_rows(num, seed), D.DataReport()
    pairs = task.preference_pairs(num, seed + 10, spec.sample_temperature, spec.label_beta)
    return pairs.rows, pairs.report
  path = spec.train_file if split == "train" else spec.eval_file
  if path is None:
    raise ValueError(f"data.{split}_file is required when data.source=files")
  if not os.path.exists(path):
    raise FileNotFoundError(f"data.{split}_file: {path} does not exist")
  # Local files -> a TFDS dataset in array_record format (reused when already built).
  name = f"{split}_{os.path.splitext(os.path.basename(path))[0]}".lower().replace("-", "_")
  builder, reports = D.build_dataset(name, kind, {"train": path},
                                     os.path.join(run.output_dir, "tfds"),
                                     on_error=spec.on_error)
  records = D.RecordSource(builder.as_data_source("train"), kind, name=path)
  read_report = reports.get("train", D.DataReport())
  tokenizer = D.load_tokenizer(spec.tokenizer)
  tokenize = D.tokenize_sft if kind == "sft" else D.tokenize_preferences
  rows, report = tokenize(records, tokenizer, spec.max_length, on_error=spec.on_error)
  return rows, _chain(read_report, report)


def _chain(read: D.DataReport, tokenized: D.DataReport) -> D.DataReport:
  """One report for reading then tokenising: rows counted once (as read), kept as
  tokenised, skips and flags of both stages."""
  merged = read.merge(tokenized)
  merged.num_rows, merged.num_kept = read.num_rows, tokenized.num_kept
  return merged


def model_config(run: RunConfig, vocab_overrides: dict) -> TransformerConfig:
  spec = run.model
  sizes = {k: v for k, v in (("embed_dim", spec.embed_dim), ("num_layers", spec.num_layers))
           if v is not None}
  return _PRESETS[spec.preset](**vocab_overrides, **sizes).replace(
      param_dtype=spec.param_dtype, dtype=spec.compute_dtype, remat=spec.remat)


def load_policy(run: RunConfig, vocab_overrides: dict,
                place=None) -> tuple[TransformerConfig, dict]:
  """The starting policy: an earlier run's model, a HF checkpoint, or a random preset.
  ``place`` puts loaded tensors on devices one by one (``parallel.param_placer(mesh)``)."""
  spec = run.model
  numerics = dict(param_dtype=spec.param_dtype, dtype=spec.compute_dtype, remat=spec.remat)
  if spec.init_from:
    config, params, kind = load_model(spec.init_from, place=place)
    if kind != "policy":
      raise CheckpointError(f"{spec.init_from}: holds a {kind}, a policy is needed")
    return config.replace(**numerics), _cast(params, spec.param_dtype)
  if spec.path:
    config, params = load_pretrained(spec.path, dtype=spec.param_dtype,
                                     compute_dtype=spec.compute_dtype, place=place)
    return config.replace(remat=spec.remat), params
  config = model_config(run, vocab_overrides)
  return config, init_params(config, jax.random.PRNGKey(run.seed))


def load_reference(run: RunConfig, policy) -> dict:
  """The reference policy: ``model.reference_from`` if set, else a copy of the start policy."""
  if not run.model.reference_from:
    return copy_tree(policy)
  _, params, kind = load_model(run.model.reference_from)
  if kind != "policy":
    raise CheckpointError(f"{run.model.reference_from}: holds a {kind}, a policy is needed")
  check_same_layout(policy, params, "the policy",
                    f"model.reference_from={run.model.reference_from}")
  return _cast(params, run.model.param_dtype)


def check_same_layout(expected, actual, expected_name: str, actual_name: str) -> None:
  """A clear error when two param trees differ in structure or shapes (another vocab or
  architecture), naming both sides and the first differing tensor."""
  flat = lambda tree: {jax.tree_util.keystr(p): tuple(x.shape)
                       for p, x in jax.tree_util.tree_leaves_with_path(tree)}
  a, b = flat(expected), flat(actual)
  for name in sorted(set(a) | set(b)):
    if a.get(name) != b.get(name):
      raise CheckpointError(f"{actual_name} does not match {expected_name}: {name} is "
                            f"{b.get(name, 'missing')} in the one and {a.get(name, 'missing')} "
                            f"in the other (another vocabulary or architecture)")


def _cast(params, dtype: str):
  return jax.tree_util.tree_map(lambda x: x.astype(jnp.dtype(dtype)), params)


def vocab_overrides(run: RunConfig) -> dict:
  if run.data.source == "synthetic":
    return synthetic_task(run).model_overrides()
  tokenizer = D.load_tokenizer(run.data.tokenizer)
  return {"vocab_size": tokenizer.vocab_size, "eos_token_id": tokenizer.eos_id}


def copy_tree(tree):
  """A copy that survives the original being donated to a step."""
  return jax.tree_util.tree_map(lambda x: jnp.array(x, copy=True), tree)


def batch_arrays(batch) -> dict[str, np.ndarray]:
  from jaxalign.training.objectives import as_arrays
  return {k: np.asarray(v) for k, v in as_arrays(batch).items()}


def build_prompt_rows(run: RunConfig, split: str, max_new_tokens: int):
  """(PromptRows, report) for online training: synthetic prompts or a prompts file."""
  spec = run.data
  if spec.source == "synthetic":
    num, seed = (spec.num_train, 5) if split == "train" else (spec.num_eval, 6)
    return synthetic_task(run).prompt_rows(num, seed), D.DataReport()
  path = spec.train_file if split == "train" else spec.eval_file
  if path is None or not os.path.exists(str(path)):
    raise FileNotFoundError(f"data.{split}_file: {path} does not exist")
  records, read_report = D.read_records(path, "prompt", on_error=spec.on_error)
  rows, report = D.tokenize_prompts(records, D.load_tokenizer(spec.tokenizer),
                                    spec.max_length - max_new_tokens, on_error=spec.on_error)
  return rows, _chain(read_report, report)


def load_reward_model(path: str | None):
  """(config, params) of a reward model folder written by ``jaxalign train rm``."""
  if not path:
    raise ValueError("online.reward_model is required: a folder from `jaxalign train rm`")
  config, params, kind = load_model(path)
  if kind != "reward_model":
    raise CheckpointError(f"{path}: holds a {kind}, a reward model is needed")
  return config, params
