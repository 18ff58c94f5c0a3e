"""Evaluation: gold reward, KL to reference, explicit and implicit reward accuracy, and the
reward-KL frontier of several policies (with best-of-n)."""

from jaxalign.eval.frontier import (best_of_n, best_of_n_kl, format_frontier_table,
                                    frontier_at, frontier_table, upper_frontier)
from jaxalign.eval.pair_accuracy import implicit_reward_accuracy, reward_model_accuracy
from jaxalign.eval.policy_eval import sample_and_score, score_samples

__all__ = ["best_of_n", "best_of_n_kl", "format_frontier_table", "frontier_at",
           "frontier_table", "implicit_reward_accuracy", "reward_model_accuracy",
           "sample_and_score", "score_samples", "upper_frontier"]
