"""The reward-KL frontier: the sampled KL and entropy against exact enumeration on a tiny
vocabulary, best-of-n's closed-form KL against the exact KL of best-of-n on many outcomes,
best-of-n's pick against independently scored samples, and ``jaxalign eval --frontier``
end to end (table rows, CSV, one-line errors before any weights load)."""

import csv
import itertools
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special

from jaxalign.config import RunConfig, load_config
from jaxalign.eval import best_of_n, best_of_n_kl, frontier_table, upper_frontier
from jaxalign.models import Transformer, init_params, tiny_gpt2
from jaxalign.training.forward import reward_scores
from jaxalign.training.runs import reward_model_params, run_training
from tests import model_folders as mf

CONFIG = tiny_gpt2(vocab_size=6, max_seq_len=16, eos_token_id=5)
PROMPT = np.array([[1, 2, 3]], np.int32)
T = 0.7


def _exact(params, other):
  """Exact KL(pi_T || other_T) and entropy of pi_T over all 36 two-token responses."""
  responses = np.array(list(itertools.product(range(6), repeat=2)), np.int32)  # [36, 2]
  sequence = np.concatenate([np.repeat(PROMPT, 36, 0), responses], axis=1)

  def logp(p):
    logits = Transformer(CONFIG).apply({"params": p}, jnp.asarray(sequence))[:, 2:4] / T
    token = jnp.take_along_axis(jax.nn.log_softmax(logits), responses[..., None], -1)[..., 0]
    return np.asarray(token.sum(-1), np.float64)

  mine, theirs = logp(params), logp(other)
  probs = np.exp(mine)
  assert probs.sum() == pytest.approx(1.0, abs=1e-5)
  return float(np.sum(probs * (mine - theirs))), float(-np.sum(probs * mine))


def test_sampled_kl_and_entropy_match_exact_enumeration():
  policy = init_params(CONFIG, jax.random.PRNGKey(0))
  reference = init_params(CONFIG, jax.random.PRNGKey(1))
  n = 4096
  prompts, mask = np.repeat(PROMPT, n, 0), np.ones((n, 3), np.int32)
  gold = lambda p, tokens, response_mask, m: jnp.asarray(tokens[:, 0] == 4, jnp.float32)
  rows = frontier_table(CONFIG, {"policy": policy}, reference, prompts, mask,
                        jax.random.PRNGKey(2), max_new_tokens=2, eos_id=None, gold_reward=gold,
                        temperature=T, batch_size=1024)
  kl, entropy = _exact(policy, reference)
  _, ref_entropy = _exact(reference, reference)
  ref_row, row = rows
  assert ref_row["policy"] == "reference" and ref_row["kl"] == 0.0 and ref_row["kl_se"] == 0.0
  assert abs(row["kl"] - kl) < 4 * row["kl_se"], (row, kl)
  assert abs(row["entropy"] - entropy) < 4 * row["entropy_se"], (row, entropy)
  assert abs(ref_row["entropy"] - ref_entropy) < 4 * ref_row["entropy_se"]
  assert row["length"] == 2.0
  # the gold reward here is P(first token = 4): exact from the first position's softmax
  logits = Transformer(CONFIG).apply({"params": policy}, jnp.asarray(PROMPT))[0, -1] / T
  p4 = float(jax.nn.softmax(logits)[4])
  assert abs(row["gold_reward"] - p4) < 4 * row["gold_reward_se"]


def test_upper_frontier_keeps_only_hull_vertices():
  points = [(0.0, -0.5), (1.0, -0.45), (2.0, 0.1), (3.0, 0.0), (10.0, 0.3), (20.0, 0.2)]
  np.testing.assert_allclose(upper_frontier(points),
                             [[0, -0.5], [2, 0.1], [10, 0.3], [20, 0.2]])


@pytest.mark.parametrize("n", [2, 4, 16, 64])
def test_best_of_n_kl_is_the_exact_kl_on_many_distinct_outcomes(n):
  # K equally likely outcomes with distinct rewards: best-of-n puts F(i)^n - F(i-1)^n on
  # the i-th lowest; its KL to uniform tends to log n - (n - 1) / n as K grows
  k = 200_000
  cdf = np.arange(k + 1, dtype=np.float64) / k
  best = np.diff(cdf ** n)
  exact = float(np.sum(scipy.special.xlogy(best, best * k)))  # 0 log 0 = 0 (underflow at n=64)
  assert best_of_n_kl(n) == pytest.approx(exact, abs=1e-3)
  assert best_of_n_kl(1) == 0.0


def test_best_of_n_keeps_the_highest_reward_model_score_of_the_first_n():
  config = tiny_gpt2(vocab_size=16, max_seq_len=24, eos_token_id=15)
  params = init_params(config, jax.random.PRNGKey(0))
  rm = (config, reward_model_params(config, params, 3))
  prompts = np.tile(np.array([[1, 2, 3, 4]], np.int32), (6, 1))
  prompts[:, 0] = np.arange(6)
  mask = np.ones_like(prompts)
  rng = jax.random.PRNGKey(5)
  rows = best_of_n(config, params, prompts, mask, rng, rm, [1, 2, 8], max_new_tokens=5,
                   eos_id=15, batch_size=3)
  # the same samples, drawn and scored one prompt batch at a time outside best_of_n
  from jaxalign.sampling import generate
  scores = []
  for start in (0, 3):
    out = generate(config, params, prompts[start:start + 3], mask[start:start + 3],
                   jax.random.fold_in(rng, start), max_new_tokens=5, eos_id=15,
                   return_sequence=True, num_samples=8)
    scores.append(np.asarray(reward_scores(config, rm[1], out.sequence,
                                           out.sequence_mask)).reshape(3, 8))
  scores = np.concatenate(scores)
  for row in rows:
    assert row["rm_score"] == pytest.approx(scores[:, :row["n"]].max(1).mean(), rel=1e-5)
    assert row["kl"] == pytest.approx(np.log(row["n"]) - (row["n"] - 1) / row["n"])
  assert rows[0]["rm_score"] <= rows[1]["rm_score"] <= rows[2]["rm_score"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """A short SFT reference, a reward model and a DPO policy from it on the synthetic task."""
  root = tmp_path_factory.mktemp("frontier")
  common = ["data.batch_size=16", "loop.log_every=50", "data.num_train=64", "data.num_eval=32"]
  train = lambda name, *extra: run_training(load_config(RunConfig, None, common + [
      f"output_dir={root / name}", *extra]), progress=False)
  train("sft", "task=sft", "loop.steps=4", "optimizer.learning_rate=3e-3")
  sft = str(root / "sft" / "model")
  train("rm", "task=rm", "loop.steps=3", f"model.init_from={sft}")
  train("dpo", "task=dpo", "loop.steps=3", f"model.init_from={sft}",
        "optimizer.learning_rate=1e-2")
  # the DPO policy's folder as if trained on another synthetic language
  other = root / "other" / "model"
  shutil.copytree(root / "dpo" / "model", other)
  recorded = other / "run_config.yaml"
  recorded.write_text(recorded.read_text().replace("task_seed: 0", "task_seed: 3"))
  return {"sft": sft, "rm": str(root / "rm" / "model"), "dpo": str(root / "dpo" / "model"),
          "other": str(other), "root": root}


def test_cli_frontier_table(runs, tmp_path):
  table = tmp_path / "table.csv"
  result = mf.jaxalign("eval", "--frontier", runs["dpo"], f"again={runs['dpo']}",
                       "--reference", runs["sft"], "--reward-model", runs["rm"],
                       "--best-of-n", "4,1", "--output", table)
  assert "on frontier" in result.stdout
  with open(table) as f:
    rows = list(csv.DictReader(f))
  assert [r["policy"] for r in rows] == ["reference", "dpo", "again", "best-of-1", "best-of-4"]
  value = lambda name, key: float(next(r[key] for r in rows if r["policy"] == name))
  assert value("reference", "kl") == 0.0
  for key in ("gold_reward", "rm_score", "kl", "entropy", "length"):
    assert value("dpo", key) == value("again", key)  # the same key for every policy
  assert value("best-of-4", "kl") == pytest.approx(np.log(4) - 0.75, rel=1e-6)
  assert value("best-of-1", "kl") == 0.0
  assert value("best-of-4", "rm_score") >= value("best-of-1", "rm_score")
  # `jaxalign eval --model` samples the same held-out prompts with the same key (seed 0)
  single = json.loads(mf.jaxalign("eval", "--model", runs["dpo"], "--reference",
                                  runs["sft"]).stdout)
  assert value("dpo", "gold_reward") == pytest.approx(single["gold_reward"], rel=1e-6)
  assert value("dpo", "kl") == pytest.approx(single["kl"], rel=1e-5)


@pytest.mark.parametrize("args, message", [
    (["--frontier", "DPO"], "--frontier needs --reference"),
    (["--frontier", "DPO", "--reference", "SFT", "--best-of-n", "0,4"], "every n must be"),
    (["--frontier", "a=DPO", "a=DPO", "--reference", "SFT"], "two policies are called 'a'"),
    (["--frontier", "DPO", "--reference", "RM"], "--reference"),
    (["--frontier", "DPO", "--reference", "SFT", "--reward-model", "DPO"], "--reward-model"),
    (["--frontier", "DPO", "o=OTHER", "--reference", "SFT"], "data.task_seed=3"),
])
def test_cli_frontier_errors(runs, args, message, capsys):
  from jaxalign.cli.main import main
  names = {"DPO": runs["dpo"], "SFT": runs["sft"], "RM": runs["rm"], "OTHER": runs["other"]}
  named = lambda a: a.split("=")[0] + "=" + names[a.split("=")[1]]
  args = [named(a) if "=" in a else names.get(a, a) for a in args]
  assert main(["eval", *args]) == 2
  error = capsys.readouterr().err.strip().splitlines()[-1]
  assert error.startswith("jaxalign: error:") and message in error, error
