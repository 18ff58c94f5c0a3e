"""Evaluation: gold reward, KL to reference, explicit and implicit reward accuracy."""

from jaxalign.eval.pair_accuracy import implicit_reward_accuracy, reward_model_accuracy
from jaxalign.eval.policy_eval import sample_and_score

__all__ = ["implicit_reward_accuracy", "reward_model_accuracy", "sample_and_score"]
