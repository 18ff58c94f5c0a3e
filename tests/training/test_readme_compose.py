"""The "Compose losses" snippets of README.md and docs/algorithms.md, run as written on a tiny
model through PreferenceObjective: each term divides by its own global count (pairs for DPO,
chosen tokens for the NLL), checked against numpy on the model's logits."""

import os
import re

import jax
import numpy as np
import pytest

from jaxalign.models import init_params, tiny_gpt2
from jaxalign.training import PreferenceObjective
from jaxalign.training.step import accumulate_gradients
from tests.training.numpy_logps import numpy_token_logps
from tests.training.pairs import random_pairs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = tiny_gpt2()
BETA = 0.1


def _snippet(path: str, marker: str) -> str:
  """The python blocks right after ``marker`` (only blank lines between them)."""
  with open(os.path.join(ROOT, path)) as f:
    text = f.read()
  rest = text[text.index(marker):]
  blocks, end = [], 0
  for match in re.finditer(r"\n```python\n(.*?)\n```", rest, re.S):
    if blocks and rest[end:match.start()].strip():
      break
    blocks.append(match.group(1))
    end = match.end()
  assert blocks, f"no python block after {marker!r} in {path}"
  return "\n".join(blocks)


def _expected(params, ref_params, batch):
  """(DPO loss at BETA, token-mean NLL of the chosen responses) in numpy."""
  seq = {}
  for name, p in (("policy", params), ("ref", ref_params)):
    for side in ("chosen", "rejected"):
      lp = numpy_token_logps(CONFIG, p, batch[f"{side}_tokens"], batch[f"{side}_attention_mask"])
      seq[name, side] = lp, (lp * np.asarray(batch[f"{side}_loss_mask"])).sum(1)
  h = ((seq["policy", "chosen"][1] - seq["ref", "chosen"][1])
       - (seq["policy", "rejected"][1] - seq["ref", "rejected"][1]))
  dpo = np.mean(np.logaddexp(0.0, -BETA * h))
  mask = np.asarray(batch["chosen_loss_mask"])
  nll = -(seq["policy", "chosen"][0] * mask).sum() / mask.sum()
  return dpo, nll


@pytest.mark.parametrize("path,marker,weight", [
    ("README.md", "Compose losses", 0.5),
    ("docs/algorithms.md", "## Composition", 1.0),
])
def test_compose_snippet_as_written_gives_the_token_mean_nll(path, marker, weight):
  namespace = {}
  exec(compile(_snippet(path, marker), path, "exec"), namespace)  # noqa: S102
  rpo = namespace["rpo"]
  params = init_params(CONFIG, jax.random.key(0))
  ref_params = init_params(CONFIG, jax.random.key(1))
  batch = random_pairs(3, B=8, T=24, vocab=CONFIG.vocab_size)
  dpo, nll = _expected(params, ref_params, batch)
  assert np.asarray(batch["chosen_loss_mask"]).sum() > 4 * 8  # tokens and pairs far apart

  objective = PreferenceObjective(CONFIG, rpo)
  for micro_batches in (1, 4):  # every micro-batch divides by the global counts
    loss, metrics, _ = jax.jit(accumulate_gradients, static_argnums=(0, 4))(
        objective, params, ref_params, batch, micro_batches)
    np.testing.assert_allclose(metrics["nll/nll"], nll, rtol=2e-5)
    np.testing.assert_allclose(metrics["dpo/loss"], dpo, rtol=2e-5)
    np.testing.assert_allclose(loss, dpo + weight * nll, rtol=2e-5)
