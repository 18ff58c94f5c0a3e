"""Losses as pure functions of arrays returning ``(loss, metrics)``; a loss never takes a model.

SFT, reward models (Bradley-Terry), the DPO family (DPO/cDPO, robust DPO, IPO, hinge, SimPO,
ORPO, KTO), PPO (clipped surrogate, clipped value loss, entropy bonus, KL-penalised rewards,
KL controllers), critic-free policy gradients (``policy_gradient_loss``: GRPO, Dr. GRPO, DAPO,
GSPO, CISPO), advantages (GAE, RLOO, GRPO, REINFORCE++), and their composition (``term``,
``weighted_sum``, ``with_statistics``). Formulas and papers: docs/algorithms.md.
"""

from jaxalign.losses._advantages import (gae_advantages, grpo_advantages,
                                         reinforce_pp_advantages, rloo_advantages,
                                         whiten_advantages, whiten_rewards)
from jaxalign.losses._common import denominator_counts
from jaxalign.losses._compose import (LossTerm, denominator_quantity, statistics_of, term,
                                      weighted_sum, with_statistics)
from jaxalign.losses._dpo import dpo_loss, hinge_loss, ipo_loss, robust_dpo_loss
from jaxalign.losses._kl_control import (AdaptiveKLController, FixedKLController,
                                         kl_penalized_rewards)
from jaxalign.losses._kto import kto_loss, kto_reference_kl
from jaxalign.losses._policy_gradient import policy_gradient_loss
from jaxalign.losses._ppo import entropy_bonus, ppo_policy_loss, ppo_value_loss
from jaxalign.losses._reference_free import orpo_loss, simpo_loss
from jaxalign.losses._reward_model import bradley_terry_loss
from jaxalign.losses._sft import sft_loss

__all__ = [
    "AdaptiveKLController", "FixedKLController", "LossTerm", "bradley_terry_loss",
    "denominator_counts", "denominator_quantity", "dpo_loss",
    "entropy_bonus", "gae_advantages", "grpo_advantages", "hinge_loss", "ipo_loss",
    "kl_penalized_rewards", "kto_loss", "kto_reference_kl", "orpo_loss",
    "policy_gradient_loss", "ppo_policy_loss", "ppo_value_loss", "reinforce_pp_advantages",
    "rloo_advantages", "robust_dpo_loss", "sft_loss", "simpo_loss",
    "statistics_of", "term", "weighted_sum", "whiten_advantages", "whiten_rewards",
    "with_statistics",
]
