"""The compiled sampler: prefill plus a lax.scan decode loop with a KV cache."""

from jaxalign.sampling.bucketing import generate_bucketed, next_bucket, pad_prompts_to_bucket
from jaxalign.sampling.filters import (apply_temperature, sampling_logits, top_k_filter,
                                       top_p_filter, truncated_logprobs)
from jaxalign.sampling.sampler import SampleOutput, generate

__all__ = ["SampleOutput", "apply_temperature", "generate", "generate_bucketed", "next_bucket",
           "pad_prompts_to_bucket", "sampling_logits", "top_k_filter", "top_p_filter",
           "truncated_logprobs"]
