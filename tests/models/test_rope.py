"""RoPE frequencies against transformers' own initialisers."""

import numpy as np
import pytest

from jaxalign.models import RopeScaling
from jaxalign.models.rope import inverse_frequencies


@pytest.mark.parametrize("scaled", [False, True])
def test_inverse_frequencies_match_transformers(scaled):
  tf = pytest.importorskip("transformers")
  from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
  scaling = dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                 original_max_position_embeddings=64)
  hf = tf.LlamaConfig(hidden_size=256, num_attention_heads=2, rope_theta=500000.0,
                      rope_scaling=scaling if scaled else None)
  if scaled:
    theirs = ROPE_INIT_FUNCTIONS["llama3"](hf)[0].numpy()
  else:
    theirs = 1.0 / (500000.0 ** (np.arange(0, 128, 2) / 128))
  ours = inverse_frequencies(128, 500000.0, RopeScaling(
      8.0, 1.0, 4.0, 64) if scaled else None)
  np.testing.assert_allclose(ours, theirs, rtol=1e-6)
  if scaled:  # the scaling really moved the low frequencies
    assert not np.allclose(ours, inverse_frequencies(128, 500000.0))
