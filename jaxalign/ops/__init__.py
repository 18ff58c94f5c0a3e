"""Pure array functions: token and sequence log-probs under masks, entropy, KL estimators
(k1/k2/k3), masked reductions and whitening. No modules, no state."""

from jaxalign.ops._dtypes import upcast
from jaxalign.ops._kl import kl_k1, kl_k2, kl_k3
from jaxalign.ops._logprobs import (entropy_from_logits, log1mexp, sequence_logprobs,
                                    shifted_entropy_from_logits, shifted_token_logprobs,
                                    token_logprobs)
from jaxalign.ops._masked import (last_true_index, masked_count, masked_mean, masked_sum,
                                  masked_var, masked_whiten)

__all__ = [
    "entropy_from_logits", "kl_k1", "kl_k2", "kl_k3", "last_true_index", "log1mexp",
    "masked_count", "masked_mean", "masked_sum", "masked_var", "masked_whiten",
    "sequence_logprobs", "shifted_entropy_from_logits", "shifted_token_logprobs",
    "token_logprobs", "upcast",
]
