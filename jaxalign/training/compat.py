"""Config-time checks that a run's pieces fit together, before any data or reference pass.

``check_compatibility(run)`` reads configs only (no weights) and raises an error naming both
sides when: the tokenizer has more ids than the policy's embedding; ``data.max_length`` (or
for online runs the prompt plus ``max_new_tokens``) is beyond the policy's ``max_seq_len``; the
reference (``model.reference_from``) differs from the policy in architecture (the reference
runs with the policy's config) or tokenizer; the reward model (``online.reward_model``) has
another vocabulary, model type or tokenizer, or fewer positions than the sequences it scores.
Without these checks such runs index past an embedding and train to NaN.
"""

from __future__ import annotations

import dataclasses
import os

from jaxalign import data as D
from jaxalign.config import ConfigError
from jaxalign.config.validate import response_budget
from jaxalign.models import CheckpointError, TransformerConfig, config_from_hf, read_model_meta
from jaxalign.models.hf_checkpoint import read_hf_config
from jaxalign.training import setup
from jaxalign.training.tokenizers import (model_tokenizer, run_tokenizer, tokenizer_fingerprint,
                                          tokenizer_source)

# Fields that do not change what the weights compute (numerics, informational ids).
_NOT_ARCHITECTURE = ("dtype", "param_dtype", "remat", "attention_block", "attention_impl",
                     "scan_layers", "bos_token_id",
                     "eos_token_id", "pad_token_id")
ONLINE_TASKS = ("ppo", "online-dpo", "grpo", "rloo")


def hf_folder_config(path: str, key: str = "model.path") -> TransformerConfig:
  """The TransformerConfig of a Hugging Face folder's config.json (no weights read)."""
  config_path = os.path.join(path, "config.json")
  if not os.path.exists(config_path):
    hint = (" (a jaxalign model folder: use model.init_from)"
            if os.path.exists(os.path.join(path, "jaxalign_config.json")) else "")
    raise CheckpointError(f"{key}={path}: no config.json{hint}")
  return config_from_hf(read_hf_config(path), where=config_path)


def folder_config(path: str, key: str, want_kind: str) -> TransformerConfig:
  """The config of jaxalign model folder ``path`` (named ``key`` in errors) holding
  ``want_kind`` ("policy" or "reward_model")."""
  try:
    config, kind, _ = read_model_meta(path)
  except CheckpointError as error:
    raise CheckpointError(f"{key}: {error}") from None
  if kind != want_kind:
    raise CheckpointError(f"{key}={path}: holds a {kind}, a {want_kind.replace('_', ' ')} "
                          "is needed")
  return config


def policy_config(run) -> tuple[TransformerConfig, str]:
  """The start policy's config (no weights) and how the run names it."""
  spec = run.model
  if spec.init_from:
    return (folder_config(spec.init_from, "model.init_from", "policy"),
            f"model.init_from={spec.init_from}")
  if spec.path:
    return hf_folder_config(spec.path), f"model.path={spec.path}"
  return setup.model_config(run, setup.vocab_overrides(run)), f"model.preset={spec.preset}"


def describe_tokenizer(run) -> str:
  kind, folder = tokenizer_source(run)
  if kind in ("synthetic", "verifiable", "bytes"):
    return {"synthetic": "the synthetic task's tokenizer", "bytes": "data.tokenizer=bytes",
            "verifiable": "the verifiable task's tokenizer"}[kind]
  if kind == "folder":
    return f"data.tokenizer={folder}"
  key = "model.init_from" if folder == run.model.init_from else "model.path"
  return f"the tokenizer of {key}={folder}"


def architecture_differences(a: TransformerConfig, b: TransformerConfig) -> list[str]:
  """``"field: a vs b"`` for each architecture field that differs (max_seq_len only for
  learned positions, where it is a weight's shape)."""
  out = []
  for field in dataclasses.fields(TransformerConfig):
    name = field.name
    if name in _NOT_ARCHITECTURE or (name == "max_seq_len" and a.positions != "learned"):
      continue
    if getattr(a, name) != getattr(b, name):
      out.append(f"{name} {getattr(a, name)!r} vs {getattr(b, name)!r}")
  return out


def check_same_architecture(policy: TransformerConfig, policy_name: str,
                            other: TransformerConfig, other_name: str) -> None:
  differences = architecture_differences(policy, other)
  if differences:
    raise CheckpointError(f"{other_name} does not match the policy ({policy_name}): "
                          f"{'; '.join(differences[:4])} (the policy's vs the other's)")


def check_same_tokenizer(tokenizer, tokenizer_name: str, folder: str, folder_name: str) -> None:
  """An error when model folder ``folder`` records a tokenizer whose ids mean other tokens
  (folders that record none are not checked)."""
  try:
    theirs = model_tokenizer(folder)
  except D.TokenizerError:
    return
  if tokenizer_fingerprint(theirs) != tokenizer_fingerprint(tokenizer):
    raise D.TokenizerError(f"{folder_name} was trained with another tokenizer ("
                           f"{theirs.vocab_size} ids) than {tokenizer_name} "
                           f"({tokenizer.vocab_size} ids)")


def check_reward_model(policy: TransformerConfig, policy_name: str, path: str, key: str,
                       tokenizer=None, tokenizer_name: str = "", scored_length: int = 0) -> None:
  """The reward model at ``path`` scores the policy's sequences (up to ``scored_length``
  tokens): same vocabulary, model type and tokenizer, enough positions."""
  name = f"{key}={path}"
  rm = folder_config(path, key, "reward_model")
  if rm.vocab_size != policy.vocab_size or rm.model_type != policy.model_type:
    raise CheckpointError(f"{name} (a {rm.model_type}, vocab_size {rm.vocab_size}) does not "
                          f"match the policy ({policy_name}: a {policy.model_type}, vocab_size "
                          f"{policy.vocab_size})")
  if scored_length > rm.max_seq_len:
    raise ConfigError(f"{name} has max_seq_len {rm.max_seq_len}, shorter than the "
                      f"{scored_length} tokens (prompt + new tokens) it would score")
  if tokenizer is not None:
    check_same_tokenizer(tokenizer, tokenizer_name, path, name)


def _check_lengths(run, policy: TransformerConfig, policy_name: str) -> int:
  """Checks lengths against the policy's positions; returns the longest sequence the run
  builds (what a reward model scores in an online run)."""
  online = run.task in ONLINE_TASKS
  new_key, new_tokens = response_budget(run) or ("online.max_new_tokens",
                                                 run.online.max_new_tokens)
  limit = policy.max_seq_len
  if run.data.source == "files":
    if run.data.max_length > limit:
      raise ConfigError(f"data.max_length={run.data.max_length} is beyond the policy's "
                        f"max_seq_len {limit} ({policy_name}); set data.max_length <= {limit}")
    if not online:
      return run.data.max_length
    if run.data.max_prompt_length is None:
      if new_tokens >= run.data.max_length:
        raise ConfigError(f"{new_key}={new_tokens} leaves no room for prompts within "
                          f"data.max_length={run.data.max_length} (prompts get max_length - "
                          "max_new_tokens tokens)")
      return run.data.max_length
    longest = run.data.max_prompt_length + new_tokens
    if longest > limit:
      raise ConfigError(f"data.max_prompt_length={run.data.max_prompt_length} + {new_key}="
                        f"{new_tokens} is beyond the policy's max_seq_len {limit} "
                        f"({policy_name})")
    return longest
  if run.data.source == "verifiable":
    task = setup.verifiable_config(run)  # its prompt length counts BOS
    longest = task.max_prompt_length + (new_tokens if online else task.max_response_length)
  else:
    task = D.SyntheticTaskConfig(seed=run.data.task_seed)
    longest = task.max_prompt_length + 1 + (new_tokens if online else task.max_response_length)
  if longest > limit:
    what = f"prompts + {new_key}={new_tokens}" if online else "its rows"
    raise ConfigError(f"the {run.data.source} task needs {longest} positions ({what}), beyond "
                      f"the policy's max_seq_len {limit} ({policy_name})")
  return longest


def check_compatibility(run) -> None:
  """All checks of the module docstring; call before building data or loading weights."""
  policy, policy_name = policy_config(run)
  tokenizer, tokenizer_name = run_tokenizer(run), describe_tokenizer(run)
  if tokenizer.vocab_size > policy.vocab_size:
    raise D.TokenizerError(f"{tokenizer_name} has {tokenizer.vocab_size} ids but the policy "
                           f"({policy_name}) has vocab_size {policy.vocab_size}: ids >= "
                           f"{policy.vocab_size} would index past its embedding")
  longest = _check_lengths(run, policy, policy_name)
  if run.model.reference_from and run.task in ("dpo", *ONLINE_TASKS):
    name = f"model.reference_from={run.model.reference_from}"
    reference = folder_config(run.model.reference_from, "model.reference_from", "policy")
    check_same_architecture(policy, policy_name, reference, name)
    check_same_tokenizer(tokenizer, tokenizer_name, run.model.reference_from, name)
  if run.task in ONLINE_TASKS and run.online.reward_model:
    check_reward_model(policy, policy_name, run.online.reward_model, "online.reward_model",
                       tokenizer, tokenizer_name, longest)
