"""Token log-probs in float64 numpy from a model's full logits: an independent check of the
chunked LM head (``training.forward.token_logprobs``)."""

import numpy as np

from jaxalign.models import Transformer


def numpy_token_logps(config, params, tokens, attention):
  """``[B, T]``: log pi(tokens[:, t] | tokens[:, <t]) for t >= 1, column 0 is 0."""
  logits = np.asarray(Transformer(config).apply({"params": params}, tokens,
                                                attention_mask=attention), np.float64)
  logits = logits - logits.max(-1, keepdims=True)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  tokens = np.asarray(tokens)
  out = np.zeros(tokens.shape)
  out[:, 1:] = np.take_along_axis(logp[:, :-1], tokens[:, 1:, None], -1)[..., 0]
  return out
