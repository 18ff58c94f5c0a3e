"""A LoRA model merged and exported to Hugging Face format: transformers loads it and its
logits match ours with the adapters on (the independent check of merge + export)."""

import jax
import numpy as np
import pytest

from jaxalign.models import LoraConfig, Transformer, init_lora, load_pretrained, merge_lora
from jaxalign.models import save_pretrained
from tests.hf_reference import build_and_save, hf_logits, load_hf, padded_batch
from tests.models.test_lora import _random_b

pytest.importorskip("transformers")


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_merged_export_matches_ours_with_adapters(tmp_path, family):
  config, base = load_pretrained(build_and_save(family, str(tmp_path / "base")))
  config = config.replace(lora=LoraConfig(rank=4, alpha=8.0))
  adapters = _random_b(init_lora(config, jax.random.PRNGKey(1)), scale=0.2)
  merged = merge_lora(config, base, adapters)
  save_pretrained(config.replace(lora=None), merged, str(tmp_path / "merged"))
  tokens, mask = padded_batch(0, [10, 7], 10, "right")
  ours = Transformer(config).apply({"params": base, "lora": adapters}, tokens,
                                   attention_mask=mask)
  plain = Transformer(config).apply({"params": base}, tokens, attention_mask=mask)
  theirs = hf_logits(load_hf(str(tmp_path / "merged")), tokens, mask)
  real = mask.astype(bool)
  assert np.abs(np.asarray(ours - plain))[real].max() > 1e-3  # the adapters matter
  np.testing.assert_allclose(np.asarray(ours)[real], theirs[real], atol=1e-4, rtol=1e-4)
