"""Our transformer against Hugging Face transformers on the same random checkpoints."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxalign.models import Transformer, count_params, load_pretrained, save_pretrained
from tests import hf_reference

FAMILIES = hf_reference.FAMILIES


def _ours(config, params, tokens, mask):
  return np.asarray(Transformer(config).apply(
      {"params": params}, jnp.asarray(tokens), attention_mask=jnp.asarray(mask)))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("side", ["left", "right"])
def test_logits_match_transformers(hf_model_dirs, family, side):
  path = hf_model_dirs[family]
  config, params = load_pretrained(path)
  tokens, mask = hf_reference.padded_batch(1, [20, 13, 7, 20], 20, side)
  ours = _ours(config, params, tokens, mask)
  theirs = hf_reference.hf_logits(hf_reference.load_hf(path), tokens, mask)
  real = mask.astype(bool)
  assert ours.dtype == np.float32
  np.testing.assert_allclose(ours[real], theirs[real], atol=1e-4, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_parameter_count_equals_transformers(hf_model_dirs, family):
  _, params = load_pretrained(hf_model_dirs[family])
  model = hf_reference.load_hf(hf_model_dirs[family])
  assert count_params(params) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("family", FAMILIES)
def test_save_pretrained_round_trips_through_transformers(hf_model_dirs, family, tmp_path):
  config, params = load_pretrained(hf_model_dirs[family])
  # Move every weight so the export cannot pass by copying the original files.
  params = {k: v for k, v in params.items()}
  params["final_norm"] = {k: v * 1.5 for k, v in params["final_norm"].items()}
  save_pretrained(config, params, str(tmp_path))
  tokens, mask = hf_reference.padded_batch(2, [12, 9], 12, "right")
  ours = _ours(config, params, tokens, mask)
  theirs = hf_reference.hf_logits(hf_reference.load_hf(str(tmp_path)), tokens, mask)
  np.testing.assert_allclose(ours[mask > 0], theirs[mask > 0], atol=1e-4, rtol=0)
  config2, params2 = load_pretrained(str(tmp_path))
  assert config2 == config
  np.testing.assert_array_equal(_ours(config2, params2, tokens, mask), ours)
