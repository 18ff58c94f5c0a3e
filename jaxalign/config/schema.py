"""The run configuration of ``jaxalign train``: one dataclass tree, YAML/JSON + --set."""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

from jaxalign.parallel.mesh import MeshConfig
from jaxalign.training.loop import LoopConfig
from jaxalign.training.optim import OptimizerConfig
from jaxalign.training.ppo import PPOSpec


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  preset: Literal["tiny_gpt2", "tiny_llama"] = "tiny_gpt2"
  path: str | None = None          # a local Hugging Face checkpoint folder (wins over preset)
  init_from: str | None = None     # a jaxalign model folder from an earlier run (e.g. SFT)
  reference_from: str | None = None  # the reference policy's folder (default: the start policy)
  param_dtype: str = "float32"     # master weights
  compute_dtype: str = "float32"   # "bfloat16" for mixed precision (losses stay float32)
  remat: bool = False              # rematerialise each block in the backward pass
  embed_dim: int | None = None     # preset size overrides
  num_layers: int | None = None


@dataclasses.dataclass(frozen=True)
class DataSpec:
  source: Literal["synthetic", "files"] = "synthetic"
  train_file: str | None = None    # JSONL or Parquet (source=files)
  eval_file: str | None = None
  tokenizer: str | None = None     # folder with tokenizer.json; None: byte-level fallback
  max_length: int = 512
  batch_size: int = 16
  eval_batch_size: int = 64
  on_error: Literal["raise", "skip"] = "raise"
  # Synthetic task (source=synthetic).
  task_seed: int = 0
  num_train: int = 2048
  num_eval: int = 256
  sample_temperature: float = 1.0  # temperature of the responses in the preference pairs
  label_beta: float = math.inf     # Bradley-Terry sharpness of gold labels (inf: noiseless)


@dataclasses.dataclass(frozen=True)
class LossSpec:
  name: str = "dpo"                # see jaxalign.training.preference_losses.LOSS_NAMES
  beta: float = 0.1
  label_smoothing: float = 0.1     # cdpo, robust
  gamma: float = 0.5               # simpo
  alpha: float = 1.0               # rpo
  reference: Literal["in_step", "cached"] = "cached"


@dataclasses.dataclass(frozen=True)
class RewardModelOptimizerConfig(OptimizerConfig):
  """The reward-model refresh's optimizer: an OptimizerConfig whose learning rate defaults to
  1e-3 (so ``--set online.rm_optimizer.name=adam`` keeps it)."""

  learning_rate: float = 1e-3


@dataclasses.dataclass(frozen=True)
class OnlineSpec:
  """Online training (PPO and online / iterative DPO): where rewards come from and how
  on-policy the data is. ``refresh_every = inf`` is offline DPO; 1 is fully online."""

  reward_model: str | None = None  # a reward-model folder from `jaxalign train rm`
  labeller: Literal["reward_model", "gold", "implicit"] = "reward_model"
  refresh_every: float = 1.0       # policy steps between fresh samples (inf: never)
  samples_per_prompt: int = 2      # k >= 2 responses per prompt
  pairs: Literal["best_worst", "all"] = "best_worst"
  prompts_per_refresh: int = 64
  max_new_tokens: int = 24
  temperature: float = 1.0         # > 0 (at 0 every pair would be a tie)
  reference: Literal["fixed", "previous_iterate", "ema"] = "fixed"
  reference_ema: float = 0.1       # a in ref <- (1 - a) ref + a policy (kept in float32)
  rm_refresh_every: int = 0        # refreshes between reward-model retraining (0: frozen)
  rm_refresh_prompts: int = 256    # prompts sampled (k each, gold-labelled) per retraining
  rm_refresh_steps: int = 20       # optimizer steps per retraining
  rm_optimizer: RewardModelOptimizerConfig = RewardModelOptimizerConfig()  # state persists


@dataclasses.dataclass(frozen=True)
class RunConfig:
  task: Literal["sft", "rm", "dpo", "ppo", "online-dpo"] = "dpo"
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
