"""The run configuration of ``jaxalign train``: one dataclass tree, YAML/JSON + --set."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

from jaxalign.config.loading import ConfigError
from jaxalign.models.config import LORA_TARGETS, LoraConfig
from jaxalign.parallel.mesh import MeshConfig
from jaxalign.training.loop import LoopConfig
from jaxalign.training.optim import OptimizerConfig
from jaxalign.training.grpo import GRPOSpec
from jaxalign.training.ppo import PPOSpec
from jaxalign.training.preference_losses import LOSS_DEFAULTS, loss_knobs


LORA_TASKS = ("sft", "dpo", "online-dpo", "ppo", "grpo", "rloo")  # tasks that train LoRA


@dataclasses.dataclass(frozen=True)
class LoraSpec:
  """LoRA adapters (docs/training.md, "LoRA"): ``rank`` 0 is off (full fine-tuning); else
  only the adapters train, over the frozen base, which is also the reference (no copy)."""

  rank: int = 0                    # 0: off
  alpha: float = 16.0              # the update is (x A B) * alpha / rank
  dropout: float = 0.0             # on the adapters' inputs, training passes only
  targets: Any = "all"             # projections: "all" or a comma list / list of q_proj,
  #   k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj (GPT-2 has no gate_proj)

  def __post_init__(self):
    targets = self.targets
    if isinstance(targets, str):
      targets = LORA_TARGETS if targets.strip() == "all" else tuple(
          t.strip() for t in targets.split(",") if t.strip())
    elif isinstance(targets, (list, tuple)):
      targets = tuple(str(t) for t in targets)
    else:
      raise ConfigError(f"model.lora.targets must be 'all', a comma list or a list of "
                        f"projections, got {targets!r}")
    object.__setattr__(self, "targets", ",".join(targets))
    if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 0:
      raise ConfigError(f"model.lora.rank must be an integer >= 0 (0: off), got {self.rank!r}")
    if self.rank:
      try:
        self.config()
      except ValueError as error:
        raise ConfigError(f"model.lora: {error}") from None

  def config(self) -> LoraConfig | None:
    """The model's ``LoraConfig`` (None when ``rank`` is 0)."""
    if not self.rank:
      return None
    return LoraConfig(rank=self.rank, alpha=float(self.alpha), dropout=float(self.dropout),
                      targets=tuple(self.targets.split(",")))


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  preset: Literal["tiny_gpt2", "tiny_llama"] = "tiny_gpt2"
  path: str | None = None          # a local Hugging Face checkpoint folder (wins over preset)
  init_from: str | None = None     # a jaxalign model folder from an earlier run (e.g. SFT)
  reference_from: str | None = None  # the reference policy's folder (default: the start policy)
  param_dtype: str = "float32"     # master weights
  compute_dtype: str = "float32"   # "bfloat16" for mixed precision (losses stay float32)
  remat: bool = False              # rematerialise each block in the backward pass
  scan_layers: bool = False        # the blocks as one nn.scan over stacked params [L, ...]:
  #   same results, compile time flat in depth (docs/models.md, "Scan over layers")
  attention_impl: Literal["einsum", "xla", "cudnn"] = "einsum"  # the attention kernel
  #   (docs/models.md: einsum everywhere; cudnn on GPUs in bf16)
  embed_dim: int | None = None     # preset size overrides
  num_layers: int | None = None
  lora: LoraSpec = LoraSpec()      # low-rank adapters (rank 0: off; tasks sft and dpo)


@dataclasses.dataclass(frozen=True)
class DataSpec:
  """What the run trains and evaluates on (docs/data.md). ``train_file`` is a path or a list
  of paths and ``{path, weight}`` entries; after construction it is a path or a tuple of
  paths, and the entries' weights are in ``train_weights``."""

  source: Literal["synthetic", "files", "verifiable"] = "synthetic"  # verifiable: problems with
  #   exact answers (data/verifiable_task.py; the verifiable_* keys, task_seed, num_*)
  train_file: Any = None           # JSONL or Parquet (source=files); several: a list, mixed
  #   by train_weights or the entries' `weight` (else every row equally likely)
  eval_file: Any = None            # a path or a list of paths (concatenated)
  train_weights: tuple[float, ...] | None = None  # sampling weight of each train_file
  cache_dir: str | None = None     # the files' TFDS copies (content-keyed); None: output_dir/tfds
  tokenizer: str | None = None     # folder with tokenizer.json or "bytes"; None: the model's
  #   (model.init_from's recorded one, else model.path's tokenizer.json); see training/tokenizers
  max_length: int = 512
  batch_size: int = 16
  eval_batch_size: int = 64
  on_error: Literal["raise", "skip"] = "raise"
  max_prompt_length: int | None = None  # prompt tokens kept when a row is too long (None: half)
  on_overflow: Literal["skip", "raise", "truncate_prompt", "truncate_response"] | None = None
  #   a row that still does not fit; None: skip (prompt files: truncate_prompt)
  pad_token: str | None = None     # override the tokenizer's pad (any token but EOS)
  pad_id: int | None = None
  chat_template: str | None = None  # a Jinja string or file; None: the tokenizer folder's own
  shared_prompt: bool = True       # pairs (dpo, rm, online-dpo): chosen and rejected in one
  #   row, the prompt run once, the LM head on response tokens only (data/pair_layout.py)
  packing: bool | None = None      # sft, rm: rows (rm: pairs) packed padding-free, several
  #   per row, attention block-diagonal (data/packing.py, data/pair_packing.py); the loss is
  #   unchanged. None: on for sft and rm (exact there), off elsewhere
  margin_scale: float = 1.0        # rm: margin = scale * (score_chosen - score_rejected) where
  #   the file has scores (0: no margin)
  # Synthetic task (source=synthetic).
  task_seed: int = 0
  num_train: int = 2048
  num_eval: int = 256
  sample_temperature: float = 1.0  # temperature of the responses in the preference pairs
  label_beta: float = math.inf     # Bradley-Terry sharpness of gold labels (inf: noiseless)
  prompt_shift: float = 0.0        # prompts (every row, online prompts too) from another region
  #   of the language: a logit bonus for the upper half of the content vocabulary
  response_shift: float = 0.0      # responses (SFT rows, preference pairs) from another policy:
  #   (1 - s) * source + s * alternate chain logits, s in [0, 1]
  sft_on_chosen: bool = False      # task=sft: the chosen responses of the preference pairs that
  #   task=dpo / rm get with the same data.* keys (as a preference file does), not SFT rows
  online_prompts: Literal["fresh", "pairs"] = "fresh"  # online trainers' train prompts: fresh
  #   ones, or the prompts of the train preference pairs that task=rm / dpo get with the same
  #   data.* keys (a reward model's own preference prompts)
  num_extra_prompts: int = 0       # online trainers: this many more train prompts without
  #   labels, from the same distribution (nested: the first k of a larger set)
  # Verifiable task (source=verifiable; docs/data.md).
  verifiable_ops: str = "add"      # comma-separated: add, sort, reverse (mixed uniformly)
  verifiable_max_digits: int = 3   # add: operands of 1..max_digits digits
  verifiable_min_items: int = 3    # sort / reverse: list lengths
  verifiable_max_items: int = 6
  verifiable_sft_noise: float = 0.0  # share of SFT rows with a wrong answer

  def __post_init__(self):
    paths, weights = _data_files(self.train_file, self.train_weights, "data.train_file")
    object.__setattr__(self, "train_file", paths)
    object.__setattr__(self, "train_weights", weights)
    object.__setattr__(self, "eval_file",
                       _data_files(self.eval_file, None, "data.eval_file", weighted=False)[0])
    if self.max_prompt_length is not None and not 0 < self.max_prompt_length < self.max_length:
      raise ConfigError(f"data.max_prompt_length={self.max_prompt_length} must be in "
                        f"[1, data.max_length={self.max_length})")
    if self.pad_id is not None and self.pad_id < 0:
      raise ConfigError(f"data.pad_id must be >= 0, got {self.pad_id}")
    if not (math.isfinite(self.margin_scale) and self.margin_scale >= 0):
      raise ConfigError(f"data.margin_scale must be finite and >= 0, got {self.margin_scale}")

  def files(self, split: str) -> tuple[str, ...]:
    """The ``train`` or ``eval`` paths as a tuple (empty when unset)."""
    value = self.train_file if split == "train" else self.eval_file
    return () if value is None else (value,) if isinstance(value, str) else tuple(value)


def _data_files(value, weights, key: str, weighted: bool = True):
  """``(path or tuple of paths or None, weights or None)`` from a path, or a list of paths and
  ``{path, weight}`` entries; a one-line ConfigError naming the entry otherwise."""
  if value is None or isinstance(value, str):
    if weights is not None and (value is None or len(weights) != 1):
      raise ConfigError(f"data.train_weights={list(weights)} needs one weight per {key} entry")
    return value, (None if weights is None else _weights(weights, "data.train_weights"))
  if not isinstance(value, (list, tuple)) or not value:
    raise ConfigError(f"{key} must be a path or a non-empty list of paths, got {value!r}")
  paths, entry_weights = [], []
  for index, entry in enumerate(value):
    where = f"{key}[{index}]"
    if isinstance(entry, dict) and weighted:
      unknown = sorted(set(entry) - {"path", "weight"})
      if unknown or not isinstance(entry.get("path"), str):
        raise ConfigError(f"{where}: expected {{path: <file>, weight: <number>}}, got {entry!r}")
      paths.append(entry["path"])
      entry_weights.append(entry.get("weight"))
    elif isinstance(entry, str):
      paths.append(entry)
      entry_weights.append(None)
    else:
      raise ConfigError(f"{where} must be a path{' or {path, weight}' if weighted else ''}, "
                        f"got {entry!r}")
  if weights is not None:
    if any(w is not None for w in entry_weights):
      raise ConfigError(f"give the weights once: in data.train_weights or in the {key} entries")
    if len(weights) != len(paths):
      raise ConfigError(f"data.train_weights has {len(weights)} weights for {len(paths)} "
                        f"{key} entries")
    entry_weights = list(weights)
  elif any(w is not None for w in entry_weights):
    entry_weights = [1.0 if w is None else w for w in entry_weights]
  else:
    entry_weights = None
  weights = None if entry_weights is None else _weights(entry_weights, "data.train_weights")
  return tuple(paths), weights


def _weights(values, key: str) -> tuple[float, ...]:
  out = []
  for index, value in enumerate(values):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
        math.isfinite(value) and value > 0):
      raise ConfigError(f"{key}[{index}]={value!r} must be a number > 0")
    out.append(float(value))
  return tuple(out)


@dataclasses.dataclass(frozen=True)
class LossSpec:
  """The DPO-family loss. A knob left ``None`` takes the loss's own default (papers / TRL:
  ``preference_losses.LOSS_DEFAULTS``, e.g. SimPO beta 2.0 and gamma 0.5, DPO beta 0.1),
  filled in at construction, so ``config.yaml`` and ``--print-config`` show the value used;
  a knob the loss does not take stays ``None`` and setting it is a ConfigError naming it.
  To switch losses build a new LossSpec: ``dataclasses.replace(spec, name=...)`` would keep
  the old loss's resolved knobs as if set."""

  name: str = "dpo"                # see jaxalign.training.preference_losses.LOSS_NAMES
  beta: float | None = None        # every loss (IPO's tau, ORPO's lambda)
  label_smoothing: float | None = None  # cdpo, robust, simpo
  gamma: float | None = None       # simpo
  alpha: float | None = None       # rpo
  reference_free: bool = False     # log pi_ref = 0: no reference model loaded or run
  reference: Literal["in_step", "cached"] = "cached"

  def __post_init__(self):
    defaults = LOSS_DEFAULTS.get(self.name)
    if defaults is None:  # an unknown name: preference_loss reports it
      return
    for knob in _LOSS_KNOBS:
      value = getattr(self, knob)
      if knob not in defaults and value not in (None, False):
        users = [name for name, knobs in LOSS_DEFAULTS.items() if knob in knobs]
        raise ConfigError(
            f"loss.{knob}={value!r} is not a knob of loss.name={self.name} (its knobs: "
            f"{', '.join(f'loss.{k}' for k in _LOSS_KNOBS if k in defaults)}); loss.{knob} "
            f"is used by {', '.join(users) or 'no loss'}")
    resolved = loss_knobs(self.name, **self.knobs())
    for knob in self.knobs():
      object.__setattr__(self, knob, resolved[knob])

  def knobs(self) -> dict:
    """The knobs ``preference_loss(self.name, **knobs)`` takes, as set (after construction:
    resolved)."""
    defaults = LOSS_DEFAULTS.get(self.name, {})
    return {knob: getattr(self, knob) for knob in _LOSS_KNOBS if knob in defaults}


_LOSS_KNOBS = ("beta", "label_smoothing", "gamma", "alpha", "reference_free")


@dataclasses.dataclass(frozen=True)
class RewardModelOptimizerConfig(OptimizerConfig):
  """The reward-model refresh's optimizer: an OptimizerConfig whose learning rate defaults to
  1e-3 (so ``--set online.rm_optimizer.name=adam`` keeps it) and whose decay horizon stays
  1000 updates (it does not follow loop.steps)."""

  learning_rate: float = 1e-3
  total_steps: int | None = 1000


@dataclasses.dataclass(frozen=True)
class OnlineSpec:
  """Online training (PPO and online / iterative DPO): where rewards come from and how
  on-policy the data is. ``refresh_every = inf`` is offline DPO; 1 is fully online."""

  reward_model: str | None = None  # a reward-model folder from `jaxalign train rm`
  labeller: Literal["reward_model", "gold", "implicit"] = "reward_model"
  refresh_every: float = 1.0       # policy steps between fresh samples (inf: never)
  samples_per_prompt: int = 2      # k >= 2 responses per prompt
  pairs: Literal["best_worst", "all"] = "best_worst"
  on_few_pairs: Literal["raise", "stop"] = "raise"  # a refresh (or reward-model retraining)
  #   with fewer pairs than one batch (most samples tie: e.g. a policy collapsed onto one
  #   response): an error, or the run ends there as a finished run (model/ and eval.json of
  #   the policy at that step)
  prompts_per_refresh: int = 64
  max_new_tokens: int = 24
  temperature: float = 1.0         # > 0 (at 0 every pair would be a tie)
  top_k: int = 0                   # sampler truncation of the refresh samples (0: off)
  top_p: float = 1.0               # (the DPO loss scores pairs at T = 1, untruncated)
  reference: Literal["fixed", "previous_iterate", "ema"] = "fixed"
  reference_ema: float = 0.1       # a in ref <- (1 - a) ref + a policy (kept in float32)
  rm_refresh_every: int = 0        # refreshes between reward-model retraining (0: frozen)
  rm_refresh_prompts: int = 256    # prompts sampled (k each, gold-labelled) per retraining
  rm_refresh_steps: int = 20       # optimizer steps per retraining
  rm_optimizer: RewardModelOptimizerConfig = RewardModelOptimizerConfig()  # state persists


@dataclasses.dataclass(frozen=True)
class RewardSpec:
  """The reward functions of ``train grpo`` / ``rloo`` (training/grpo_rewards.py): weights; 0
  leaves a function out, None means 1 when the run has its source."""

  correct: float | None = None      # data.source=verifiable: exact answer match
  format: float = 0.0               # verifiable task: the answer is made of digits
  gold: float | None = None         # data.source=synthetic: the task's gold reward
  reward_model: float | None = None  # online.reward_model's score
  length_penalty: float = 0.0       # -coef * completion length
  overlong_cache: int = 0           # DAPO's soft overlong punishment over the last n tokens


@dataclasses.dataclass(frozen=True)
class RunConfig:
  task: Literal["sft", "rm", "dpo", "ppo", "online-dpo", "grpo", "rloo"] = "dpo"
  output_dir: str = "runs/default"
  seed: int = 0
  model: ModelSpec = ModelSpec()
  data: DataSpec = DataSpec()
  loss: LossSpec = LossSpec()
  optimizer: OptimizerConfig = OptimizerConfig()
  loop: LoopConfig = LoopConfig()
  mesh: MeshConfig = MeshConfig()
  online: OnlineSpec = OnlineSpec()
  ppo: PPOSpec = PPOSpec()
  grpo: GRPOSpec = GRPOSpec()
  rewards: RewardSpec = RewardSpec()
