"""Online training on two gloo-joined CPU processes x 4 devices gives the metrics of one
process x 8 devices: PPO iterations and online-DPO refreshes, through ``jaxalign train``.

Each process feeds its own slice of every global prompt batch; rollouts are global arrays
over the one 8-device mesh, gathered to every host where host values are needed (metrics,
the gold reward, online DPO's pairs). Only process 0 writes metrics.

Adam runs with eps = 1e-3 (policy and reward model): with 1e-8, an entry whose gradient is
reduction-order noise (~1e-9; the cross-process all-reduce sums in another order) moves by
+-lr, which says nothing about distributed correctness."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.parallel import processes

# Each test launches three training processes: long end-to-end runs (make test-all).
pytestmark = pytest.mark.slow

MESH = {"mesh.data": 8}


def _metrics(path) -> list[dict]:
  with open(path / "metrics.jsonl") as f:
    return [json.loads(line) for line in f]


def _one_and_two_processes(task: str, root, settings: dict):
  reason = processes.gloo_unavailable()
  if reason:
    pytest.skip(reason)
  single, multi = root / "one_process", root / "two_processes"
  reference = processes.start(processes.train_command(task, single, settings),
                              processes.env(8))
  outputs = processes.finish(processes.two_processes(
      processes.train_command(task, multi, settings)), f"two-process {task}")
  processes.finish([reference], f"single-process {task}")
  return _metrics(single), _metrics(multi), outputs


def _assert_same_rows(single: list[dict], multi: list[dict], prefixes: tuple[str, ...]):
  assert [r["step"] for r in multi] == [r["step"] for r in single]
  compared = 0
  for a, b in zip(single, multi):
    names = {k for k in a if k.startswith(prefixes)}
    assert names == {k for k in b if k.startswith(prefixes)}
    for name in names:
      if name.endswith("rewards/accuracies") and abs(a[name.replace(
          "accuracies", "margins")]) < 1e-6:
        # Implicit rewards of float noise (a previous_iterate reference right after a
        # refresh is the policy itself): the fraction of positive margins is the noise's sign.
        continue
      np.testing.assert_allclose(b[name], a[name], rtol=1e-4, atol=1e-5, err_msg=name)
      compared += 1
  assert compared >= 10


def test_two_process_ppo_matches_one_process(sft_and_rm, tmp_path):
  settings = dict(MESH, **{"model.init_from": sft_and_rm["sft"],
                           "online.reward_model": sft_and_rm["rm"], "loop.steps": 2,
                           "loop.log_every": 1, "ppo.rollout_batch_size": 32,
                           "ppo.max_new_tokens": 12, "ppo.temperature": 0.8,
                           "optimizer.learning_rate": 1e-4, "optimizer.eps": 1e-3})
  single, multi, outputs = _one_and_two_processes("ppo", tmp_path, settings)
  assert "prompts:" in outputs[0] and "prompts:" not in outputs[1], "only process 0 prints"
  assert len(single) == 2 and single[0]["rollout/kl"] == 0.0
  _assert_same_rows(single, multi, ("rollout/", "ppo/", "objective/"))


def test_two_process_online_dpo_refreshes_match_one_process(sft_and_rm, tmp_path):
  # Two refreshes (steps 0 and 2), the second after a reward-model refresh: sampling,
  # reward-model labels, pair formation, cached reference log-probs, RM Bradley-Terry steps
  # and the DPO steps on the pairs all run on the two-process mesh.
  settings = dict(MESH, **{"model.init_from": sft_and_rm["sft"],
                           "online.reward_model": sft_and_rm["rm"], "loop.steps": 4,
                           "loop.log_every": 1, "online.refresh_every": 2,
                           "online.rm_refresh_every": 1, "online.rm_refresh_prompts": 32,
                           "online.rm_refresh_steps": 2, "online.prompts_per_refresh": 24,
                           "online.samples_per_prompt": 3, "online.max_new_tokens": 12,
                           "online.reference": "previous_iterate", "data.batch_size": 16,
                           "data.num_eval": 32, "data.eval_batch_size": 32,
                           "optimizer.learning_rate": 1e-3, "optimizer.eps": 1e-3,
                           "online.rm_optimizer.eps": 1e-3})
  single, multi, _ = _one_and_two_processes("online-dpo", tmp_path, settings)
  refreshes = [r for r in single if "online/pairs" in r]
  assert [r["step"] for r in refreshes] == [0, 2]
  assert "online/rm_loss" in refreshes[1] and refreshes[0]["online/pairs"] > 0
  _assert_same_rows(single, multi, ("online/", "train/loss", "train/rewards/", "train/logps/",
                                    "eval/"))


def test_two_process_grpo_matches_one_process(sft_and_rm, tmp_path):
  # Group sampling (one prefill, G samples per prompt), the gold reward scored on every host
  # from the gathered rollout, group advantages, the k3 KL to an EMA reference, and two
  # passes of two minibatches per rollout, on the two-process mesh.
  settings = dict(MESH, **{"model.init_from": sft_and_rm["sft"], "loop.steps": 2,
                           "loop.log_every": 1, "grpo.prompts_per_iteration": 16,
                           "grpo.group_size": 4, "grpo.max_new_tokens": 12,
                           "grpo.temperature": 0.8, "grpo.num_iterations": 2,
                           "grpo.num_minibatches": 2, "grpo.kl_coef": 0.05,
                           "grpo.ref_ema": 0.1, "optimizer.learning_rate": 1e-4,
                           "optimizer.eps": 1e-3})
  single, multi, outputs = _one_and_two_processes("grpo", tmp_path, settings)
  assert "prompts:" in outputs[0] and "prompts:" not in outputs[1], "only process 0 prints"
  assert len(single) == 2 and single[0]["rollout/kl"] == 0.0
  _assert_same_rows(single, multi, ("rollout/", "grpo/"))
