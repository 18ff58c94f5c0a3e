"""Flax decoder-only transformers (GPT-2 and Llama families), KV cache, scalar heads, and
Hugging Face checkpoint import/export."""

from jaxalign.models.cache import KVCache, init_cache
from jaxalign.models.config import (LoraConfig, RopeScaling, TransformerConfig, gpt2_config,
                                    llama_config, tiny_gpt2, tiny_llama)
from jaxalign.models.heads import (PolicyValueModel, RewardModel, ScalarHead, ValueModel,
                                   last_token_index)
from jaxalign.models.hf_checkpoint import load_pretrained, save_pretrained
from jaxalign.models.hf_config import CheckpointError, config_from_hf, config_to_hf
from jaxalign.models.hf_reward import save_pretrained_reward_model
from jaxalign.models.init import count_params, init_params
from jaxalign.models.lora import init_lora, lora_param_count, merge_lora
from jaxalign.models.params_io import load_model, read_model_meta, save_model
from jaxalign.models.transformer import Transformer, positions_from_mask

__all__ = [
    "CheckpointError", "KVCache", "LoraConfig", "PolicyValueModel", "RewardModel",
    "RopeScaling", "ScalarHead", "Transformer", "TransformerConfig", "ValueModel",
    "config_from_hf", "config_to_hf", "count_params", "gpt2_config", "init_cache", "init_lora",
    "init_params", "last_token_index", "llama_config", "load_model", "load_pretrained",
    "lora_param_count", "merge_lora", "positions_from_mask", "read_model_meta", "save_model",
    "save_pretrained", "save_pretrained_reward_model", "tiny_gpt2", "tiny_llama",
]
