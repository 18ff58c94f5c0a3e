"""``policy_gradient_loss`` and the critic-free advantages against TRL 1.16's own code.

The loss: TRL's ``GRPOTrainer._compute_loss`` runs on a real trainer (a tiny random GPT-2,
built offline) whose ``_get_per_token_logps_and_entropies`` is replaced by one returning fixed
leaf tensors, so TRL's loss, its metrics and the gradients its backward pass puts on the
log-probs and entropies are computed by TRL's code on the tensors we feed ours. Nothing of TRL
is transcribed. The tensors: rows of lengths 7, 3, 5, 1, 6, 4 (padding holds finite garbage),
``old_logps != logps`` (log-ratios of std 0.35, so the lower and the upper clip are both active
on some tokens; asserted), advantages of both signs, a reference ``ref_logps != logps`` with
``beta > 0``, asymmetric clip ranges.

The advantages: TRL's ``_generate_and_score_completions`` samples real completions, a reward
function hands out fixed rewards, and TRL's advantages are compared with ours on those rewards
(``scale_rewards`` group / batch / none; RLOOTrainer's ``normalize_advantages``), which checks
TRL's unbiased std and its ``eps = 1e-4`` (one group's rewards differ by 5e-4, where eps
matters).
"""

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("datasets")
pytest.importorskip("trl")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from jaxalign.losses import (grpo_advantages, policy_gradient_loss,  # noqa: E402
                             rloo_advantages)
from tests import trl_reference as ref  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")

B, T = 6, 7
LENGTHS = np.array([7, 3, 5, 1, 6, 4])
TOL = dict(rtol=1e-5, atol=1e-5)


def _tensors():
  rng = np.random.default_rng(0)
  mask = (np.arange(T)[None, :] < LENGTHS[:, None]).astype(np.int64)
  logps = -(np.abs(rng.normal(size=(B, T))) * 1.5 + 0.1)
  return {
      "mask": mask,
      "logps": logps.astype(np.float32),
      "old_logps": (logps + rng.normal(scale=0.35, size=(B, T))).astype(np.float32),
      "ref_logps": (logps + rng.normal(scale=0.5, size=(B, T))).astype(np.float32),
      "entropies": (np.abs(rng.normal(size=(B, T))) + 0.2).astype(np.float32),
      "advantages": np.array([0.9, -0.9, 1.2, -0.4, -0.8, 0.6], np.float32),
      "token_advantages": rng.normal(size=(B, T)).astype(np.float32),
  }


TENSORS = _tensors()
CLIP = dict(epsilon=0.2, epsilon_high=0.28)
OURS_CLIP = dict(clip_low=0.2, clip_high=0.28)
BETA = 0.04

# name: (TRL GRPOConfig fields, our knobs, per-token advantages?)
# TRL's use_bias_correction_kl defaults to True: our kl_importance_weight=True.
CASES = {
    "grpo": (dict(loss_type="grpo", beta=BETA, **CLIP),
             dict(aggregation="sequence_mean", kl_coef=BETA, kl_importance_weight=True,
                  **OURS_CLIP), False),
    "grpo_plain_kl": (dict(loss_type="grpo", beta=BETA, use_bias_correction_kl=False, **CLIP),
                      dict(aggregation="sequence_mean", kl_coef=BETA, **OURS_CLIP), False),
    "bnpo": (dict(loss_type="bnpo", beta=BETA, **CLIP),
             dict(aggregation="token_mean", kl_coef=BETA, kl_importance_weight=True,
                  **OURS_CLIP), False),
    "bnpo_no_reference": (dict(loss_type="bnpo", beta=0.0, **CLIP),
                          dict(aggregation="token_mean", **OURS_CLIP), False),
    "dr_grpo": (dict(loss_type="dr_grpo", beta=BETA, max_completion_length=10, **CLIP),
                dict(aggregation="constant", max_new_tokens=10, kl_coef=BETA,
                     kl_importance_weight=True, **OURS_CLIP), False),
    "dapo": (dict(loss_type="dapo", beta=BETA, **CLIP),
             dict(aggregation="token_mean", kl_coef=BETA, kl_importance_weight=True,
                  **OURS_CLIP), False),
    "dapo_delta": (dict(loss_type="dapo", beta=BETA, delta=1.4, **CLIP),
                   dict(aggregation="token_mean", delta=1.4, kl_coef=BETA,
                        kl_importance_weight=True, **OURS_CLIP), False),
    "dapo_token_advantages": (dict(loss_type="dapo", beta=BETA, **CLIP),
                              dict(aggregation="token_mean", kl_coef=BETA,
                                   kl_importance_weight=True, **OURS_CLIP), True),
    "dapo_entropy_bonus": (dict(loss_type="dapo", beta=BETA, entropy_coef=0.01, **CLIP),
                           dict(aggregation="token_mean", kl_coef=BETA,
                                kl_importance_weight=True, entropy_coef=0.01, **OURS_CLIP),
                           False),
    # TRL's epsilon_high is CISPO's bound on the weight itself: ours is 1 + clip_high
    "cispo": (dict(loss_type="cispo", beta=BETA, epsilon_high=1.3),
              dict(aggregation="token_mean", cispo=True, clip_high=0.3, kl_coef=BETA,
                   kl_importance_weight=True), False),
    # GSPO: sequence-level ratios are close to 1, so its clip range is small (paper: 3e-4/4e-4)
    "gspo": (dict(loss_type="grpo", importance_sampling_level="sequence", beta=BETA,
                  epsilon=0.03, epsilon_high=0.04),
             dict(aggregation="sequence_mean", importance_level="sequence", clip_low=0.03,
                  clip_high=0.04, kl_coef=BETA, kl_importance_weight=True), False),
    "gspo_plain_kl": (dict(loss_type="grpo", importance_sampling_level="sequence", beta=BETA,
                           use_bias_correction_kl=False, epsilon=0.03, epsilon_high=0.04),
                      dict(aggregation="sequence_mean", importance_level="sequence",
                           clip_low=0.03, clip_high=0.04, kl_coef=BETA), False),
    "gspo_dapo": (dict(loss_type="dapo", importance_sampling_level="sequence", beta=BETA,
                       epsilon=0.03, epsilon_high=0.04),
                  dict(aggregation="token_mean", importance_level="sequence", clip_low=0.03,
                       clip_high=0.04, kl_coef=BETA, kl_importance_weight=True), False),
    "gspo_dr_grpo": (dict(loss_type="dr_grpo", importance_sampling_level="sequence",
                          max_completion_length=10, beta=0.0, epsilon=0.03,
                          epsilon_high=0.04),
                     dict(aggregation="constant", max_new_tokens=10,
                          importance_level="sequence", clip_low=0.03, clip_high=0.04), False),
    "gspo_cispo": (dict(loss_type="cispo", importance_sampling_level="sequence", beta=BETA,
                        epsilon_high=1.05),
                   dict(aggregation="token_mean", importance_level="sequence", cispo=True,
                        clip_high=0.05, kl_coef=BETA, kl_importance_weight=True), False),
    "luspo": (dict(loss_type="luspo", importance_sampling_level="sequence", beta=0.0,
                   epsilon=0.03, epsilon_high=0.04),
              dict(aggregation="token_sum", importance_level="sequence", clip_low=0.03,
                   clip_high=0.04), False),
}
# metrics TRL logs and we compute under the same name
SHARED_METRICS = ("clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean",
                  "cispo_clip_ratio", "kl", "entropy", "policy_loss")


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory):
  return ref.build_gpt2(str(tmp_path_factory.mktemp("grpo_parity") / "policy"), seed=0)


def _trainer(policy_dir, out_dir, trainer="grpo", num_generations=2, batch_size=B,
             reward_values=None, **config):
  from datasets import Dataset
  from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer
  Config, Trainer = (GRPOConfig, GRPOTrainer) if trainer == "grpo" else (RLOOConfig, RLOOTrainer)
  rewards = reward_values

  def reward(completions, **_):
    return [0.0] * len(completions) if rewards is None else list(rewards[:len(completions)])

  checkpointing = ("activation_checkpointing" if "activation_checkpointing"
                   in Config.__dataclass_fields__ else "gradient_checkpointing")
  config.setdefault("max_completion_length", T)
  args = Config(output_dir=out_dir, per_device_train_batch_size=batch_size,
                num_generations=num_generations, use_cpu=True, report_to=[],
                save_strategy="no", disable_tqdm=True, dataloader_num_workers=0, seed=0,
                bf16=False, fp16=False, logging_steps=1, max_steps=1,
                **{checkpointing: False}, **config)
  prompts = [f"t{1 + i} t{2 + i}" for i in range(batch_size // num_generations)]
  data = Dataset.from_dict({"prompt": prompts})
  return Trainer(model=policy_dir, reward_funcs=reward, args=args, train_dataset=data,
                 processing_class=ref.make_tokenizer())


def _trl_loss(trainer, rows, advantages, *, num_items_in_batch=None):
  """TRL's ``_compute_loss`` on ``TENSORS[rows]``: (loss, d loss/d logps, d loss/d entropies,
  metrics)."""
  import torch
  t = {k: v[rows] for k, v in TENSORS.items()}
  logps = torch.tensor(t["logps"], requires_grad=True)
  entropies = torch.tensor(t["entropies"], requires_grad=True)
  trainer._get_per_token_logps_and_entropies = lambda *args, **kwargs: (logps, entropies, None)
  n = len(t["mask"])
  mask = torch.tensor(t["mask"], dtype=torch.int64)
  inputs = {
      "prompt_ids": torch.zeros((n, 2), dtype=torch.int64),
      "prompt_mask": torch.ones((n, 2), dtype=torch.int64),
      "completion_ids": torch.zeros((n, T), dtype=torch.int64),
      "completion_mask": mask,
      "advantages": torch.tensor(advantages[rows]),
      "old_per_token_logps": torch.tensor(t["old_logps"]),
      "ref_per_token_logps": torch.tensor(t["ref_logps"]),
      "num_items_in_batch": torch.tensor(
          float(mask.sum()) if num_items_in_batch is None else float(num_items_in_batch)),
  }
  loss = trainer._compute_loss(trainer.model, inputs)
  loss.backward()
  mode = "train" if trainer.model.training else "eval"
  metrics = {k: v[-1] for k, v in trainer._metrics[mode].items()}
  trainer._metrics[mode].clear()
  entropy_grad = np.zeros_like(t["entropies"]) if entropies.grad is None else entropies.grad.numpy()
  return loss.item(), logps.grad.numpy(), entropy_grad, metrics


def _ours(knobs, rows, advantages, **extra):
  t = {k: jnp.asarray(v[rows]) for k, v in TENSORS.items()}
  ref_logps = t["ref_logps"] if knobs.get("kl_coef", 0.0) else None

  def loss_fn(logps, entropies):
    return policy_gradient_loss(logps, t["old_logps"], jnp.asarray(advantages[rows]), t["mask"],
                                ref_logps=ref_logps, entropies=entropies, **knobs, **extra)

  (loss, metrics), grads = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True))(
      t["logps"], t["entropies"])
  return float(loss), np.asarray(grads[0]), np.asarray(grads[1]), metrics


ALL = slice(None)


@pytest.mark.parametrize("case", list(CASES))
def test_loss_gradients_and_metrics_equal_trl(case, policy_dir, tmp_path):
  trl_config, knobs, token_advantages = CASES[case]
  advantages = TENSORS["token_advantages" if token_advantages else "advantages"]
  trainer = _trainer(policy_dir, str(tmp_path), **trl_config)
  trainer.model.eval()
  trl_loss, trl_grad, trl_entropy_grad, trl_metrics = _trl_loss(trainer, ALL, advantages)
  loss, grad, entropy_grad, metrics = _ours(knobs, ALL, advantages)

  np.testing.assert_allclose(loss, trl_loss, **TOL)
  np.testing.assert_allclose(grad, trl_grad, **TOL)
  np.testing.assert_allclose(entropy_grad, trl_entropy_grad, **TOL)
  assert np.abs(trl_grad).max() > 1e-3  # a gradient worth comparing
  compared = [name for name in SHARED_METRICS if name in trl_metrics]
  assert "entropy" in compared and ("kl" in compared) == (trl_config["beta"] != 0)
  for name in compared:
    np.testing.assert_allclose(float(metrics[name]), trl_metrics[name], **TOL, err_msg=name)
  if trl_config.get("entropy_coef"):
    assert "policy_loss" in compared
    assert np.abs(trl_entropy_grad).max() > 0
  # the fixed tensors exercise both clips (CISPO: its bound) somewhere
  if "cispo" in trl_config["loss_type"]:
    assert trl_metrics["cispo_clip_ratio"] > 0
  else:
    assert trl_metrics["clip_ratio/low_mean"] > 0 and trl_metrics["clip_ratio/high_mean"] > 0
    assert trl_metrics["clip_ratio/region_mean"] < 1
  if trl_config.get("delta"):  # delta binds: the loss differs from the one-sided clip's
    plain, *_ = _ours({**knobs, "delta": None}, ALL, advantages)
    assert abs(plain - loss) > 1e-3


def test_gspo_with_token_advantages_follows_gspo_token_not_trl():
  """Per-token advantages at the sequence level: values equal TRL's, gradients are GSPO-token's.

  TRL multiplies the ``[B, 1]`` sequence ratio, whose gradient spreads over the sequence, by
  ``[B, T]`` advantages; GSPO-token (Zheng et al. 2025) gives token t the gradient
  ``s_i A_it / |y_i|``. With ``[B]`` advantages both are the same (the parity cases above).
  """
  import torch
  t = TENSORS
  advantages = t["token_advantages"]
  knobs = dict(aggregation="sequence_mean", importance_level="sequence", clip_low=10.0,
               clip_high=10.0)  # no clipping: the gradient in closed form
  loss, grad, _, _ = _ours(knobs, ALL, advantages)
  mask = t["mask"].astype(np.float64)
  n = mask.sum(1, keepdims=True)
  s = np.exp(((t["logps"] - t["old_logps"]) * mask).sum(1, keepdims=True) / n)
  np.testing.assert_allclose(loss, np.mean(-(s * advantages * mask).sum(1, keepdims=True) / n),
                             **TOL)
  np.testing.assert_allclose(grad, -s * advantages * mask / n / B, **TOL)
  # TRL's gradient instead: d/dlogp_t of -(s/n) sum_t' A_t' = -(s/n^2) sum_t' A_t'
  trl_form = torch.tensor(t["logps"], dtype=torch.float64, requires_grad=True)
  m = torch.tensor(mask)
  seq = torch.exp(((trl_form - torch.tensor(t["old_logps"], dtype=torch.float64)) * m).sum(
      -1, keepdim=True) / m.sum(-1, keepdim=True))
  torch.mean((-seq * torch.tensor(advantages, dtype=torch.float64) * m).sum(-1) / m.sum(-1)
             ).backward()
  assert not np.allclose(grad, trl_form.grad.numpy(), atol=1e-4)


@pytest.mark.parametrize("loss_type, knobs", [
    ("grpo", dict(aggregation="sequence_mean")),
    ("dapo", dict(aggregation="token_mean")),
    ("dr_grpo", dict(aggregation="constant", max_new_tokens=10)),
])
def test_micro_batches_equal_trl_gradient_accumulation(loss_type, knobs, policy_dir, tmp_path):
  """Two accumulation steps of 3 rows in TRL's train mode vs ours with the global counts."""
  trainer = _trainer(policy_dir, str(tmp_path), loss_type=loss_type, beta=BETA,
                     max_completion_length=10, gradient_accumulation_steps=2, batch_size=B // 2,
                     **CLIP)
  trainer.model.train()
  trainer.current_gradient_accumulation_steps = 2
  knobs = dict(knobs, kl_coef=BETA, kl_importance_weight=True, **OURS_CLIP)
  tokens, sequences = TENSORS["mask"].sum(), B
  advantages = TENSORS["advantages"]
  total = 0.0
  for rows in (slice(0, 3), slice(3, 6)):
    trl_loss, trl_grad, _, _ = _trl_loss(trainer, rows, advantages, num_items_in_batch=tokens)
    loss, grad, _, _ = _ours(knobs, rows, advantages, denominator=tokens,
                             sequence_denominator=sequences)
    np.testing.assert_allclose(loss, trl_loss, **TOL)
    np.testing.assert_allclose(grad, trl_grad, **TOL)
    total += loss
  np.testing.assert_allclose(total, _ours(knobs, ALL, advantages)[0], **TOL)


# 2 prompts x 4 samples; the second group's rewards differ by 5e-4, where eps = 1e-4 matters
REWARDS = np.array([0.0, 1.0, 0.5, 2.0, 1.0, 1.0, 1.0, 1.0005], np.float32)


def _trl_advantages(trainer):
  batch = next(iter(trainer.get_train_dataloader()))
  trainer.model.eval()
  return trainer._generate_and_score_completions(batch)["advantages"].numpy()


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_grpo_advantages_equal_trl(scale, policy_dir, tmp_path):
  trainer = _trainer(policy_dir, str(tmp_path), num_generations=4, batch_size=8,
                     reward_values=REWARDS, scale_rewards=scale, max_completion_length=3)
  expected = _trl_advantages(trainer)
  np.testing.assert_allclose(grpo_advantages(REWARDS, 4, scale=scale), expected, **TOL)
  if scale == "group":  # 5e-4 / (std + 1e-4): eps visible, and no eps would be wrong
    assert not np.allclose(grpo_advantages(REWARDS, 4, eps=0.0), expected, **TOL)


@pytest.mark.parametrize("normalize", [False, True])
def test_rloo_advantages_equal_trl(normalize, policy_dir, tmp_path):
  trainer = _trainer(policy_dir, str(tmp_path), trainer="rloo", num_generations=4,
                     batch_size=8, reward_values=REWARDS, beta=0.0,
                     normalize_advantages=normalize, max_completion_length=3)
  np.testing.assert_allclose(rloo_advantages(REWARDS, 4, normalize=normalize),
                             _trl_advantages(trainer), **TOL)
