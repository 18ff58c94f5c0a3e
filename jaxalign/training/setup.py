"""Building a run's pieces from its config: data rows, the model, the reference.

Data rows are the data module's ``SFTRows`` / ``PreferenceRows`` / ``UnpairedRows`` (or a
``MixedRows`` of several files): from the built-in synthetic task, or from local JSONL/Parquet
files through the content-keyed TFDS builder and a tokenizer (``training.file_rows``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxalign import data as D
from jaxalign.config import RunConfig
from jaxalign.models import (CheckpointError, TransformerConfig, init_params, load_model,
                             load_pretrained, tiny_gpt2, tiny_llama)
from jaxalign.training import file_rows
from jaxalign.training.tokenizers import (run_tokenizer, save_run_model,  # noqa: F401
                                          warn_unknown_tokens)

_PRESETS = {"tiny_gpt2": tiny_gpt2, "tiny_llama": tiny_llama}


def synthetic_task(run: RunConfig) -> D.SyntheticTask:
  return D.SyntheticTask(D.SyntheticTaskConfig(seed=run.data.task_seed))


def verifiable_config(run: RunConfig) -> D.VerifiableTaskConfig:
  """The verifiable task of ``data.source=verifiable`` (the ``data.verifiable_*`` keys)."""
  spec = run.data
  return D.VerifiableTaskConfig(
      ops=tuple(op.strip() for op in str(spec.verifiable_ops).split(",")),
      max_digits=spec.verifiable_max_digits, min_items=spec.verifiable_min_items,
      max_items=spec.verifiable_max_items, sft_noise=spec.verifiable_sft_noise,
      seed=spec.task_seed)


def verifiable_task(run: RunConfig) -> D.VerifiableTask:
  return D.VerifiableTask(verifiable_config(run))


def build_rows(run: RunConfig, split: str):
  """(rows, report) of ``split`` ("train" or "eval") for the run's task."""
  spec = run.data
  if spec.source == "verifiable":  # SFT rows: prompt + gold answer + EOS (held-out for eval)
    num, seed = (spec.num_train, 1) if split == "train" else (spec.num_eval, 2)
    return verifiable_task(run).sft_rows(num, seed, split), D.DataReport()
  if spec.source == "synthetic":
    task = synthetic_task(run)
    num, seed = (spec.num_train, 1) if split == "train" else (spec.num_eval, 2)
    if run.task == "sft" and not spec.sft_on_chosen:
      return task.sft_rows(num, seed, prompt_shift=spec.prompt_shift,
                           response_shift=spec.response_shift), D.DataReport()
    pairs = task.preference_pairs(num, seed + 10, spec.sample_temperature, spec.label_beta,
                                  spec.prompt_shift, spec.response_shift)
    if run.task == "sft":  # data.sft_on_chosen: SFT on the pairs' chosen responses
      rows = pairs.rows
      return D.SFTRows.from_token_lists(rows.prompts, rows.chosen, rows.pad_id,
                                        task.model_overrides()["eos_token_id"],
                                        rows.max_length), pairs.report
    return pairs.rows, pairs.report
  # Local files -> TFDS datasets in array_record format, keyed by content (file_rows).
  tokenizer = run_tokenizer(run)
  rows, report = file_rows.file_rows(run, split, tokenizer)
  warn_unknown_tokens(rows, tokenizer, f"data.{split}_file={_files(spec, split)}")
  return rows, report


def _files(spec, split: str) -> str:
  return ",".join(spec.files(split))


is_unpaired = file_rows.is_unpaired


def model_config(run: RunConfig, vocab_overrides: dict) -> TransformerConfig:
  spec = run.model
  sizes = {k: v for k, v in (("embed_dim", spec.embed_dim), ("num_layers", spec.num_layers))
           if v is not None}
  return _PRESETS[spec.preset](**vocab_overrides, **sizes).replace(
      param_dtype=spec.param_dtype, dtype=spec.compute_dtype, remat=spec.remat,
      attention_impl=spec.attention_impl, scan_layers=spec.scan_layers,
      lora=spec.lora.config())


def load_policy(run: RunConfig, vocab_overrides: dict,
                place=None) -> tuple[TransformerConfig, dict]:
  """The starting policy: an earlier run's model, a HF checkpoint, or a random preset.
  ``place`` puts loaded tensors on devices one by one (``parallel.param_placer(mesh)``)."""
  spec = run.model
  numerics = dict(param_dtype=spec.param_dtype, dtype=spec.compute_dtype, remat=spec.remat,
                  attention_impl=spec.attention_impl, lora=spec.lora.config())
  if spec.init_from:  # in the run's layer layout, whichever the folder holds
    config, params, kind = load_model(spec.init_from, place=place,
                                      scan_layers=spec.scan_layers)
    if kind != "policy":
      raise CheckpointError(f"{spec.init_from}: holds a {kind}, a policy is needed")
    return config.replace(**numerics), _cast(params, spec.param_dtype)
  if spec.path:
    config, params = load_pretrained(spec.path, dtype=spec.param_dtype,
                                     compute_dtype=spec.compute_dtype, place=place,
                                     scan_layers=spec.scan_layers)
    return config.replace(remat=spec.remat, attention_impl=spec.attention_impl,
                          lora=spec.lora.config()), params
  config = model_config(run, vocab_overrides)
  return config, init_params(config, jax.random.PRNGKey(run.seed))


def load_reference(run: RunConfig, policy) -> dict:
  """The reference policy: ``model.reference_from`` if set, else a copy of the start policy."""
  if not run.model.reference_from:
    return copy_tree(policy)
  _, params, kind = load_model(run.model.reference_from, scan_layers=run.model.scan_layers)
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
  if run.data.source == "verifiable":
    return verifiable_task(run).model_overrides()
  if run.data.source == "synthetic":
    return synthetic_task(run).model_overrides()
  tokenizer = run_tokenizer(run)
  return {"vocab_size": tokenizer.vocab_size, "eos_token_id": tokenizer.eos_id}


def copy_tree(tree):
  """A copy that survives the original being donated to a step."""
  return jax.tree_util.tree_map(lambda x: jnp.array(x, copy=True), tree)


def batch_arrays(batch) -> dict[str, np.ndarray]:
  from jaxalign.training.objectives import as_arrays
  return {k: np.asarray(v) for k, v in as_arrays(batch).items()}


def build_prompt_rows(run: RunConfig, split: str, max_new_tokens: int):
  """(PromptRows, report) for online training: synthetic prompts or a prompts file. With
  ``data.source=verifiable`` they are ``D.AnswerPromptRows``: batches carry ``answer_tokens``
  / ``answer_mask`` (the eval split: held-out problems, for pass@k)."""
  spec = run.data
  if spec.source == "verifiable":
    num, seed = (spec.num_train, 5) if split == "train" else (spec.num_eval, 6)
    return verifiable_task(run).prompt_rows(num, seed, split), D.DataReport()
  if spec.source == "synthetic":
    return _synthetic_prompt_rows(run, split), D.DataReport()
  tokenizer = run_tokenizer(run)
  rows, report = file_rows.prompt_file_rows(run, split, tokenizer, max_new_tokens)
  warn_unknown_tokens(rows, tokenizer, f"data.{split}_file={_files(spec, split)}")
  return rows, report


def _synthetic_prompt_rows(run: RunConfig, split: str) -> D.PromptRows:
  """The synthetic task's online prompts. Eval: ``num_eval`` held-out prompts (seed 6).
  Train: ``data.online_prompts`` = ``fresh``, ``num_train`` prompts of their own (seed 5), or
  ``pairs``, the prompts of the train preference pairs (``build_rows``: those ``task=rm`` /
  ``dpo`` train on with the same ``data.*`` keys, in order); then ``data.num_extra_prompts``
  unlabelled prompts from the same distribution (``nested_prompts``, seed 7)."""
  spec = run.data
  task = synthetic_task(run)
  if split != "train":
    return task.prompt_rows(spec.num_eval, 6, spec.prompt_shift)
  if spec.online_prompts == "pairs":
    prompts = list(build_rows(run, "train")[0].prompts)
  else:
    prompts = task.sample_prompts(spec.num_train, 5, spec.prompt_shift)
  if spec.num_extra_prompts:
    prompts += task.nested_prompts(spec.num_extra_prompts, 7, spec.prompt_shift)
  return D.PromptRows.from_token_lists(prompts, D.PAD_ID, task.config.max_prompt_length + 1)


def load_reward_model(path: str | None):
  """(config, params) of a reward model folder written by ``jaxalign train rm``."""
  if not path:
    raise ValueError("online.reward_model is required: a folder from `jaxalign train rm`")
  config, params, kind = load_model(path)
  if kind != "reward_model":
    raise CheckpointError(f"{path}: holds a {kind}, a reward model is needed")
  return config, params
