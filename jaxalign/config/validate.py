"""The whole run checked before any data is built, any model is loaded or anything is written:
``validate_run(run)`` raises one ``ConfigError`` naming the key; ``resolve_run(run)`` fills
in the defaults that follow other keys (``optimizer.total_steps`` = ``loop.steps``, the
automatic ``loop.checkpoint_every``).

Task-specific checks live with their task (``training.online_dpo.check_online_config``,
``training.ppo.check_ppo_spec``) and are called from here.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os

from jaxalign.config.loading import ConfigError, to_dict
from jaxalign.config.schema import RunConfig

DTYPES = ("float32", "bfloat16", "float16", "float64")
_DTYPE_ALIASES = {"bf16": "bfloat16", "fp32": "float32", "f32": "float32", "float": "float32",
                  "fp16": "float16", "f16": "float16", "half": "float16", "fp64": "float64",
                  "f64": "float64", "double": "float64"}
_HF_FILE, _JAXALIGN_FILE = "config.json", "jaxalign_config.json"


CRITIC_FREE_TASKS = ("grpo", "rloo")


def response_budget(run: RunConfig) -> tuple[str, int] | None:
  """``(key, max_new_tokens)`` of an online run's responses, or None for an offline task."""
  if run.task == "ppo":
    return "ppo.max_new_tokens", run.ppo.max_new_tokens
  if run.task in CRITIC_FREE_TASKS:
    return "grpo.max_new_tokens", run.grpo.max_new_tokens
  if run.task == "online-dpo":
    return "online.max_new_tokens", run.online.max_new_tokens
  return None


def _updates_per_step(run: RunConfig) -> int:
  if run.task == "ppo":
    return run.ppo.epochs * run.ppo.num_minibatches
  if run.task in CRITIC_FREE_TASKS:
    return run.grpo.num_iterations * run.grpo.num_minibatches
  return 1


def resolve_run(run: RunConfig) -> RunConfig:
  """``run`` with the defaults that depend on other keys made explicit (what config.yaml and
  ``--print-config`` show)."""
  from jaxalign.training.loop import auto_checkpoint_every
  optimizer, loop = run.optimizer, run.loop
  if optimizer.total_steps is None:  # the run's optimizer updates (PPO: several an iteration)
    updates = loop.steps * _updates_per_step(run)
    optimizer = dataclasses.replace(optimizer, total_steps=updates)
  if loop.checkpoint_every is None:
    every = run.online.refresh_every
    refreshing = run.task == "online-dpo" and not math.isinf(every) and every >= 1
    loop = dataclasses.replace(loop, checkpoint_every=auto_checkpoint_every(
        loop.steps, int(every) if refreshing and every == int(every) else 1))
  return dataclasses.replace(run, optimizer=optimizer, loop=loop)


_DERIVED = {"optimizer.total_steps": "the run's optimizer updates (loop.steps; PPO: x "
                                     "ppo.epochs x ppo.num_minibatches)",
            "loop.checkpoint_every": "auto: a tenth of loop.steps, within [50, 500]"}


def flat_config(run: RunConfig) -> dict:
  """``{dotted key: value}`` of every leaf of ``run``, in schema order."""
  out = {}
  def walk(node, prefix):
    for key, value in node.items():
      if isinstance(value, dict):
        walk(value, f"{prefix}{key}.")
      else:
        out[prefix + key] = value
  walk(to_dict(run), "")
  return out


def _show(value) -> str:
  if value is None:
    return "null"
  if isinstance(value, bool):
    return str(value).lower()
  if isinstance(value, str):
    return repr(value) if not value or value != value.strip() else value
  return str(value)


def format_config(run: RunConfig) -> str:
  """Every key of ``run`` with its resolved value, one ``key: value`` a line (what
  ``jaxalign train TASK --print-config`` prints); derived defaults say what they follow."""
  given, resolved = flat_config(run), flat_config(resolve_run(run))
  lines = []
  for key, value in resolved.items():
    note = f"  # {_DERIVED[key]}" if key in _DERIVED and given[key] is None else ""
    lines.append(f"{key}: {_show(value)}{note}")
  return "\n".join(lines)


def validate_run(run: RunConfig) -> None:
  """Every config-time check of ``run`` (a ConfigError naming the key), cheapest first."""
  try:
    _check_ranges(run)
    _check_dtypes(run)
    _check_loss(run)
    _check_batches(run)
    _check_task(run)
    _check_models(run)
    _check_data_files(run)
  except ConfigError:
    raise
  except ValueError as error:  # the task checks raise ValueError: one type for the caller
    raise ConfigError(str(error)) from error


def _at_least(value, low, key: str, why: str = "") -> None:
  if value is not None and not value >= low:
    raise ConfigError(f"{key} must be >= {low}, got {value}{why}")


def _positive(value, key: str, why: str = "") -> None:
  if value is not None and not (value > 0 and math.isfinite(value)):
    raise ConfigError(f"{key} must be a positive finite number, got {value}{why}")


def _check_optimizer(spec, prefix: str) -> None:
  _positive(spec.learning_rate, f"{prefix}.learning_rate")
  _at_least(spec.warmup_steps, 0, f"{prefix}.warmup_steps")
  _at_least(spec.total_steps, 1, f"{prefix}.total_steps")
  _at_least(spec.weight_decay, 0, f"{prefix}.weight_decay")
  _at_least(spec.eps, 0, f"{prefix}.eps")
  _positive(spec.grad_clip, f"{prefix}.grad_clip", " (null turns clipping off)")
  for key in ("b1", "b2"):
    if not 0 <= getattr(spec, key) < 1:
      raise ConfigError(f"{prefix}.{key} must be in [0, 1), got {getattr(spec, key)}")
  if not 0 <= spec.end_learning_rate_ratio <= 1:
    raise ConfigError(f"{prefix}.end_learning_rate_ratio must be in [0, 1], got "
                      f"{spec.end_learning_rate_ratio}")


def _check_ranges(run: RunConfig) -> None:
  loop, data = run.loop, run.data
  for key in ("steps", "micro_batches", "log_every", "keep_checkpoints"):
    _at_least(getattr(loop, key), 1, f"loop.{key}")
  _at_least(loop.eval_every, 0, "loop.eval_every", " (0: only at the end)")
  _at_least(loop.checkpoint_every, 0, "loop.checkpoint_every", " (0: no checkpoints)")
  for key in ("batch_size", "eval_batch_size"):
    _at_least(getattr(data, key), 1, f"data.{key}")
  _at_least(data.max_length, 2, "data.max_length")
  if data.source == "synthetic":
    _at_least(data.num_train, 1, "data.num_train")
    _at_least(data.num_eval, 1, "data.num_eval")
    _positive(data.sample_temperature, "data.sample_temperature")
    if not data.label_beta > 0:
      raise ConfigError(f"data.label_beta must be > 0 (inf: noiseless), got {data.label_beta}")
    if not math.isfinite(data.prompt_shift):
      raise ConfigError(f"data.prompt_shift must be finite, got {data.prompt_shift}")
    if not 0 <= data.response_shift <= 1:
      raise ConfigError(f"data.response_shift must be in [0, 1] (the alternate chain's weight), "
                        f"got {data.response_shift}")
  if data.sft_on_chosen and (run.task != "sft" or data.source != "synthetic"):
    raise ConfigError(f"data.sft_on_chosen applies to task=sft with data.source=synthetic (a "
                      f"preference file already trains SFT on its chosen), got task={run.task} "
                      f"data.source={data.source}")
  if data.source == "verifiable":
    _check_verifiable(run)
  _check_online_prompt_set(run)
  _at_least(run.model.embed_dim, 1, "model.embed_dim")
  _at_least(run.model.num_layers, 1, "model.num_layers")
  _check_optimizer(run.optimizer, "optimizer")
  if run.task == "online-dpo":
    _check_optimizer(run.online.rm_optimizer, "online.rm_optimizer")
  if run.task in ("dpo", "online-dpo"):
    _positive(run.loss.beta, "loss.beta")
    if run.loss.name in ("cdpo", "robust") and not 0 <= run.loss.label_smoothing < 0.5:
      raise ConfigError(f"loss.label_smoothing must be in [0, 0.5), got "
                        f"{run.loss.label_smoothing}")
    _at_least(run.loss.alpha, 0, "loss.alpha")
  if response_budget(run) is not None:
    key, value = response_budget(run)
    _at_least(value, 1, key)
    if value >= data.max_length:
      raise ConfigError(f"{key}={value} leaves no room for a prompt within "
                        f"data.max_length={data.max_length}")


def _check_online_prompt_set(run: RunConfig) -> None:
  """data.online_prompts / data.num_extra_prompts: the synthetic task's online prompt set."""
  data = run.data
  _at_least(data.num_extra_prompts, 0, "data.num_extra_prompts")
  if data.online_prompts == "fresh" and data.num_extra_prompts == 0:
    return
  keys = (f"data.online_prompts={data.online_prompts} "
          f"data.num_extra_prompts={data.num_extra_prompts}")
  if data.source != "synthetic":
    raise ConfigError(f"{keys}: these choose the synthetic task's online prompts "
                      f"(data.source=synthetic), got data.source={data.source}")
  if run.task in ("sft", "rm", "dpo"):
    raise ConfigError(f"{keys}: these choose the prompts of an online trainer (ppo, "
                      f"online-dpo), got task={run.task}")


def _check_verifiable(run: RunConfig) -> None:
  """data.source=verifiable: SFT rows or prompts with answers (no pairs), valid task knobs."""
  data = run.data
  if run.task in ("rm", "dpo", "online-dpo"):
    raise ConfigError(f"data.source=verifiable has problems with exact answers, not preference "
                      f"pairs: use it with task=sft or an online RL trainer, got "
                      f"task={run.task}")
  _at_least(data.num_train, 1, "data.num_train")
  _at_least(data.num_eval, 1, "data.num_eval")
  from jaxalign.data.verifiable_task import OPS, VerifiableTask, VerifiableTaskConfig
  ops = [op.strip() for op in str(data.verifiable_ops).split(",")]
  if any(op not in OPS for op in ops):
    raise ConfigError(f"data.verifiable_ops={data.verifiable_ops!r} must be a comma-separated "
                      f"list of {', '.join(OPS)}")
  if not 1 <= data.verifiable_max_digits <= 6:
    raise ConfigError(f"data.verifiable_max_digits must be in [1, 6], got "
                      f"{data.verifiable_max_digits}")
  if not 1 <= data.verifiable_min_items <= data.verifiable_max_items:
    raise ConfigError(f"need 1 <= data.verifiable_min_items <= data.verifiable_max_items, got "
                      f"{data.verifiable_min_items} and {data.verifiable_max_items}")
  if not 0 <= data.verifiable_sft_noise <= 1:
    raise ConfigError(f"data.verifiable_sft_noise must be in [0, 1], got "
                      f"{data.verifiable_sft_noise}")
  task = VerifiableTask(VerifiableTaskConfig(
      ops=tuple(ops), max_digits=data.verifiable_max_digits,
      min_items=data.verifiable_min_items, max_items=data.verifiable_max_items,
      seed=data.task_seed))
  held_out = task.split_size("eval")  # None: a task too large to count (thousands held out)
  if held_out is not None and data.num_eval > held_out:
    keys = [f"data.verifiable_ops={data.verifiable_ops}"]
    if "add" in ops:
      keys.append(f"data.verifiable_max_digits={data.verifiable_max_digits}")
    if set(ops) - {"add"}:
      keys.append(f"data.verifiable_max_items={data.verifiable_max_items}")
    raise ConfigError(f"data.num_eval={data.num_eval} is more than the {held_out} held-out "
                      f"problems of the verifiable task with {' '.join(keys)}: lower "
                      f"data.num_eval or make the task larger")


def _check_dtypes(run: RunConfig) -> None:
  for key in ("param_dtype", "compute_dtype"):
    value = getattr(run.model, key)
    if value in DTYPES:
      continue
    meant = _DTYPE_ALIASES.get(str(value).lower())
    meant = meant or next(iter(difflib.get_close_matches(str(value), DTYPES, n=1)), None)
    hint = f"; did you mean {meant!r}?" if meant else ""
    raise ConfigError(f"model.{key}={value!r} is not a dtype name{hint} (one of "
                      f"{', '.join(DTYPES)})")


def _check_loss(run: RunConfig) -> None:
  if run.task not in ("dpo", "online-dpo"):
    return
  from jaxalign.training.preference_losses import LOSS_NAMES
  if run.loss.name not in LOSS_NAMES:
    close = difflib.get_close_matches(run.loss.name, LOSS_NAMES, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"loss.name: unknown loss {run.loss.name!r}{hint} (one of "
                      f"{', '.join(LOSS_NAMES)})")


def _check_batches(run: RunConfig) -> None:
  if run.task == "ppo":  # ppo.* batch layout: check_ppo_spec
    return
  size, micro = run.data.batch_size, run.loop.micro_batches
  if size % micro:
    raise ConfigError(f"data.batch_size={size} is not divisible by loop.micro_batches="
                      f"{micro}")


def _local(path: str) -> bool:
  return "://" not in path


def _model_folder(path: str | None, key: str, want: str, other_key: str) -> None:
  """``want``: "hf" (a folder with config.json) or "jaxalign" (jaxalign_config.json)."""
  if not path or not _local(path):
    return
  if not os.path.exists(path):
    raise ConfigError(f"{key}: {path} does not exist")
  if not os.path.isdir(path):
    raise ConfigError(f"{key}: {path} is not a folder")
  has_hf = os.path.exists(os.path.join(path, _HF_FILE))
  has_ours = os.path.exists(os.path.join(path, _JAXALIGN_FILE))
  if want == "hf" and not has_hf:
    if has_ours:
      raise ConfigError(f"{key}={path} is a jaxalign model folder ({_JAXALIGN_FILE}), not a "
                        f"Hugging Face one: did you mean {other_key}={path}?")
    raise ConfigError(f"{key}={path} has no {_HF_FILE}: {key} is a Hugging Face checkpoint "
                      f"folder (config.json + model.safetensors)")
  if want == "jaxalign" and not has_ours:
    if has_hf:
      raise ConfigError(f"{key}={path} is a Hugging Face folder ({_HF_FILE}), not a "
                        f"jaxalign model folder: did you mean {other_key}={path}?")
    raise ConfigError(f"{key}={path} has no {_JAXALIGN_FILE}: {key} is a model folder "
                      f"written by `jaxalign train` (output_dir/model)")


def _model_kind(path: str | None, key: str, kind: str) -> None:
  if not path or not _local(path):
    return
  from jaxalign.models.params_io import read_model_meta
  try:
    _, found, _ = read_model_meta(path)
  except (OSError, ValueError, KeyError, TypeError) as error:
    raise ConfigError(f"{key}={path}: cannot read {_JAXALIGN_FILE}: {error}") from error
  if found != kind:
    raise ConfigError(f"{key}={path} holds a {found}, a {kind.replace('_', ' ')} is needed")


def _check_models(run: RunConfig) -> None:
  model = run.model
  if model.path and model.init_from:
    raise ConfigError(f"set one of model.path (a Hugging Face folder) and model.init_from (a "
                      f"jaxalign model folder), not both: model.path={model.path}, "
                      f"model.init_from={model.init_from}")
  _model_folder(model.path, "model.path", "hf", "model.init_from")
  _model_folder(model.init_from, "model.init_from", "jaxalign", "model.path")
  _model_kind(model.init_from, "model.init_from", "policy")
  if run.task in ("dpo", "online-dpo", "ppo", *CRITIC_FREE_TASKS):
    _model_folder(model.reference_from, "model.reference_from", "jaxalign", "model.path")
    _model_kind(model.reference_from, "model.reference_from", "policy")
  needs_rm = run.task == "ppo" or (run.task == "online-dpo" and
                                   run.online.labeller == "reward_model")
  if run.task == "ppo" and not run.online.reward_model:
    raise ConfigError("online.reward_model is required for ppo: a folder from "
                      "`jaxalign train rm` (its output_dir/model)")
  if needs_rm or run.online.reward_model and run.task in ("online-dpo", *CRITIC_FREE_TASKS):
    _model_folder(run.online.reward_model, "online.reward_model", "jaxalign", "model.path")
    _model_kind(run.online.reward_model, "online.reward_model", "reward_model")


def _paths(value) -> list[str]:
  if value is None:
    return []
  return [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]


def _check_data_files(run: RunConfig) -> None:
  data = run.data
  if data.source != "files":
    return
  splits = ("train",) if run.task in ("ppo", *CRITIC_FREE_TASKS) else ("train", "eval")
  for split in splits:
    key = f"data.{split}_file"
    paths = _paths(getattr(data, f"{split}_file"))
    if not paths:
      raise ConfigError(f"{key} is required when data.source=files")
    for path in paths:
      if _local(path) and not os.path.exists(path):
        raise ConfigError(f"{key}: {path} does not exist")


PACKING_TASKS = ("sft", "rm")


def packs(run) -> bool:
  """Whether the run packs its batches: ``data.packing``, or (None, the default) its task
  is one of ``PACKING_TASKS``."""
  if run.data.packing is None:
    return run.task in PACKING_TASKS
  return run.data.packing


def _check_task(run: RunConfig) -> None:
  from jaxalign.config.schema import LORA_TASKS
  if run.model.lora.rank and run.task not in LORA_TASKS:
    raise ConfigError(f"model.lora is not supported for {run.task} yet (LoRA trains "
                      f"{', '.join(LORA_TASKS)}): set model.lora.rank=0")
  ema = {"ppo": ("ppo.ref_ema", run.ppo.ref_ema), "grpo": ("grpo.ref_ema", run.grpo.ref_ema),
         "rloo": ("grpo.ref_ema", run.grpo.ref_ema)}.get(run.task)
  if run.model.lora.rank and run.task == "online-dpo" and run.online.reference != "fixed":
    raise ConfigError(f"online.reference={run.online.reference} with model.lora: the reference "
                      "is the frozen base (adapters off); a moving reference would need its own "
                      "copy of the weights: set online.reference=fixed")
  if run.model.lora.rank and ema and ema[1]:
    raise ConfigError(f"{ema[0]}={ema[1]} with model.lora: the reference is the frozen base "
                      "(adapters off); an EMA reference would need its own copy of the "
                      f"weights: set {ema[0]}=0")
  if run.data.packing is True and run.task not in PACKING_TASKS:
    raise ConfigError(f"data.packing packs {' and '.join(PACKING_TASKS)} batches, not "
                      f"{run.task}: set data.packing=false")
  if run.task == "online-dpo":
    from jaxalign.training.online_dpo import check_online_config
    check_online_config(run)
  if run.task == "ppo":
    from jaxalign.training.ppo import check_ppo_spec
    _at_least(run.ppo.rollout_batch_size, 1, "ppo.rollout_batch_size")
    check_ppo_spec(run.ppo, run.loop.micro_batches)
  if run.task in CRITIC_FREE_TASKS:
    from jaxalign.training.grpo import check_grpo_spec
    check_grpo_spec(run.grpo, run.loop.micro_batches)
    if run.task == "rloo" and run.grpo.advantage != "rloo":
      raise ConfigError(f"jaxalign train rloo is grpo with grpo.advantage=rloo, got "
                        f"grpo.advantage={run.grpo.advantage}: use jaxalign train grpo")
    _check_rewards(run)


def _check_rewards(run: RunConfig) -> None:
  """The reward functions of a grpo / rloo run exist for its data, before anything is built."""
  spec, source = run.rewards, run.data.source
  if spec.correct and source != "verifiable":
    raise ConfigError(f"rewards.correct checks gold answers: it needs data.source=verifiable, "
                      f"got data.source={source}")
  if spec.gold and source != "synthetic":
    raise ConfigError(f"rewards.gold is the synthetic task's gold reward: it needs "
                      f"data.source=synthetic, got data.source={source}")
  if spec.reward_model and not run.online.reward_model:
    raise ConfigError("rewards.reward_model weighs online.reward_model's score: set "
                      "online.reward_model")
  if spec.overlong_cache < 0 or spec.overlong_cache >= run.grpo.max_new_tokens:
    raise ConfigError(f"rewards.overlong_cache must be in [0, grpo.max_new_tokens="
                      f"{run.grpo.max_new_tokens}), got {spec.overlong_cache}")
  has_any = (spec.correct != 0 and source == "verifiable") or (
      spec.gold != 0 and source == "synthetic") or (
      spec.reward_model != 0 and bool(run.online.reward_model)) or spec.format
  if not has_any:
    raise ConfigError("no reward function is on: set rewards.correct (data.source=verifiable), "
                      "rewards.gold (data.source=synthetic) or online.reward_model")
