"""Evaluation: gold reward, KL to reference, explicit and implicit reward accuracy."""

from jaxalign.eval.policy_eval import sample_and_score

__all__ = ["sample_and_score"]
