"""Pairwise accuracy of an explicit or an implicit reward on a set of preference pairs.

The fraction of pairs (weighted by the rows' ``weights``; 1 each unless the data set them)
whose chosen response gets a strictly higher reward than the rejected one (a tie counts as
wrong):

- ``reward_model_accuracy``: the reward model's score at each sequence's last real token
  (EXRM; the ``eval/accuracy`` of a ``task=rm`` run);
- ``implicit_reward_accuracy``: the implicit reward ``beta * (log pi(y|x) - log pi_ref(y|x))``,
  log-probs summed over the response tokens (DPORM, Lin et al. 2024, arXiv 2409.03650; the
  ``eval/rewards/accuracies`` of a ``task=dpo`` run). Any ``beta > 0`` ranks the pairs alike.

Both run the trainers' own held-out evaluator (``training.dataset_pass.make_evaluator``:
every row once, bucketed batches), so they equal what a training run reports on the same
rows.
"""

from __future__ import annotations

from jaxalign.parallel import MeshConfig, make_mesh


def _evaluate(objective, params, ref_params, rows, batch_size: int, mesh) -> dict:
  from jaxalign.training.dataset_pass import make_evaluator
  mesh = make_mesh(MeshConfig()) if mesh is None else mesh
  return make_evaluator(objective, rows, ref_params, batch_size, mesh)(params)


def reward_model_accuracy(config, params, rows, *, batch_size: int = 64, mesh=None) -> float:
  """Accuracy of a reward model (``load_model`` of a ``task=rm`` folder) on ``rows``
  (``data.PreferenceRows``)."""
  from jaxalign.training.objectives import RewardModelObjective
  return _evaluate(RewardModelObjective(config), params, None, rows, batch_size,
                   mesh)["accuracy"]


def implicit_reward_accuracy(config, params, ref_params, rows, *, beta: float = 0.1,
                             batch_size: int = 64, mesh=None) -> float:
  """Accuracy of the implicit reward of policy ``params`` against ``ref_params`` on
  ``rows`` (``data.PreferenceRows``)."""
  from jaxalign.training.objectives import PreferenceObjective
  from jaxalign.training.preference_losses import preference_loss
  if not beta > 0:
    raise ValueError(f"beta must be > 0, got {beta}")
  objective = PreferenceObjective(config, preference_loss("dpo", beta=beta).loss_term)
  return _evaluate(objective, params, ref_params, rows, batch_size,
                   mesh)["rewards/accuracies"]
