"""A Llama whose next-token logits are an exact, known function of the last token.

All blocks are zeroed, so the residual stream is the token embedding, a one-hot vector;
the final RMSNorm maps any one-hot e_t to sqrt(D) e_t, so with ``lm_head = table.T / sqrt(D)``
the logit of token v after token t is exactly ``table[t, v]``.
"""

import jax
import jax.numpy as jnp
import numpy as np

from jaxalign.models import init_params, tiny_llama


def fake_model(table: np.ndarray, max_seq_len: int = 256):
  V = table.shape[0]
  config = tiny_llama(vocab_size=V, embed_dim=V, head_dim=8, num_heads=2, num_kv_heads=1,
                      mlp_dim=8, norm_eps=0.0, max_seq_len=max_seq_len)
  params = jax.tree_util.tree_map(jnp.zeros_like, init_params(config, jax.random.key(0)))
  params["embed"] = jnp.eye(V)
  params["final_norm"]["scale"] = jnp.ones((V,))
  params["lm_head"] = jnp.asarray(table, jnp.float32).T / jnp.sqrt(float(V))
  return config, params
