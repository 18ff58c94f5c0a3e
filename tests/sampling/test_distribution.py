"""The sampled frequencies match softmax(logits / T) restricted to top-k / top-p, with the
restriction computed by transformers' own logits warpers (chi-square at a fixed seed)."""

import jax
import numpy as np
import pytest

from jaxalign.sampling import generate
from tests.sampling.fake_model import fake_model

V, DRAWS = 16, 4000


def _expected(logits, temperature, top_k, top_p):
  torch = pytest.importorskip("torch")
  from transformers.generation.logits_process import (TemperatureLogitsWarper,
                                                      TopKLogitsWarper, TopPLogitsWarper)
  scores = torch.tensor(logits)[None]
  scores = TemperatureLogitsWarper(temperature)(None, scores)
  if top_k:
    scores = TopKLogitsWarper(top_k)(None, scores)
  if top_p < 1:
    scores = TopPLogitsWarper(top_p)(None, scores)
  return torch.softmax(scores, -1)[0].double().numpy()


@pytest.mark.parametrize("temperature, top_k, top_p", [
    (1.0, 0, 1.0), (0.6, 0, 1.0), (1.3, 5, 1.0), (0.8, 0, 0.7), (1.0, 6, 0.8)])
def test_empirical_frequencies_match(temperature, top_k, top_p):
  from scipy import stats
  logits = np.linspace(2.0, -2.0, V).astype(np.float32)
  logits = logits[np.random.default_rng(0).permutation(V)]
  config, params = fake_model(np.tile(logits, (V, 1)))
  prompt = np.full((DRAWS, 1), 3, np.int32)
  out = generate(config, params, prompt, np.ones_like(prompt), jax.random.key(11),
                 max_new_tokens=1, temperature=temperature, top_k=top_k, top_p=top_p)
  counts = np.bincount(np.asarray(out.tokens[:, 0]), minlength=V)
  expected = _expected(logits, temperature, top_k, top_p)
  support = expected > 0
  expected = expected / expected[support].sum()
  assert counts[~support].sum() == 0, "sampled a token the filters remove"
  chi2, p_value = stats.chisquare(counts[support], expected[support] * DRAWS)
  assert p_value > 1e-3, (chi2, counts, expected * DRAWS)
  # The sampling log-prob is exactly the restricted distribution's log-prob.
  np.testing.assert_allclose(np.exp(out.sampling_logprobs[:, 0]),
                             expected[np.asarray(out.tokens[:, 0])], rtol=1e-5)
