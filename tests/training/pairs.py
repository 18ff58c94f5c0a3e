"""Random right-padded preference batches for training tests (prompt + response + pad)."""

import jax.numpy as jnp
import numpy as np


def random_rows(rng, B, T, vocab, prompt=(3, 8), response=(2, 12)):
  tokens = rng.integers(3, vocab, (B, T))
  attention = np.zeros((B, T), np.int32)
  loss = np.zeros((B, T), np.int32)
  for i in range(B):
    p, r = rng.integers(*prompt), rng.integers(*response)
    attention[i, :p + r] = 1
    loss[i, p:p + r] = 1
  return tokens * attention, attention, loss


def random_pairs(seed=0, B=8, T=24, vocab=256):
  rng = np.random.default_rng(seed)
  batch = {}
  for side in ("chosen", "rejected"):
    tokens, attention, loss = random_rows(rng, B, T, vocab)
    batch.update({f"{side}_tokens": tokens, f"{side}_attention_mask": attention,
                  f"{side}_loss_mask": loss})
  return {k: jnp.asarray(v, jnp.int32) for k, v in batch.items()}
