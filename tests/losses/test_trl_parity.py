"""End-to-end parity with TRL's DPOTrainer (trl 1.x): the same tokenised pairs, the same two
models, the same first batch; TRL's loss and reward metrics equal ours to 1e-5.

The policy and the reference are *different* tiny random GPT-2s (seeds 0 and 1), so the
log-ratios are not zero and the loss is not log 2. Prompts and completions have different
lengths, so right padding, the prompt exclusion, the EOS that TRL appends (and also pads
with: GPT-2 has no pad token) and the next-token shift all matter. TRL's conventions, read
from ``trl/trainer/dpo_trainer.py``:
- rows are ``prompt_ids + completion_ids`` with EOS appended to the completion text, no BOS,
  right-padded with the pad id (EOS here); ``completion_mask`` marks the completion and EOS;
- sequence log-prob = sum over completion tokens, each scored from the previous position;
- ``ipo`` divides each log-ratio by its completion length (``completion_mask.sum``) inside the
  loss only; the reward metrics stay on the summed log-ratios;
- ``robust`` = ``[-(1-eps) log s(bh) + eps log s(-bh)] / (1 - 2 eps)``;
- ``sft`` (combined with ``sigmoid`` via ``loss_weights``) is the mean NLL over the chosen
  completion tokens of the batch: our ``rpo``.
"""

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("datasets")
pytest.importorskip("trl")

import jax  # noqa: E402

from jaxalign.data.batches import right_pad  # noqa: E402
from jaxalign.models import load_pretrained  # noqa: E402
from jaxalign.training.objectives import PreferenceObjective  # noqa: E402
from jaxalign.training.preference_losses import preference_loss  # noqa: E402
from tests import trl_reference as ref  # noqa: E402

# (prompt ids, chosen ids, rejected ids), completions without EOS; lengths all differ.
PAIRS = [
    ([1, 2, 3], [4, 5], [6, 7, 8, 9]),
    ([10, 11, 12, 13, 14, 15], [16], [17, 18]),
    ([20], [21, 22, 23, 24, 25], [26, 27, 28]),
    ([30, 31], [32, 33, 34], [35]),
]
# TRL 1.16 itself calls transformers' deprecated `is_gradient_checkpointing`
pytestmark = pytest.mark.filterwarnings(
    "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")

METRICS = ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
           "logps/chosen", "logps/rejected")
TOL = dict(rtol=1e-5, atol=1e-5)

# (TRL loss_type, TRL loss_weights, our loss name, knobs); label_smoothing only for robust.
CASES = {
    "sigmoid": (["sigmoid"], None, "dpo", dict(beta=0.1)),
    "sigmoid_beta0.5": (["sigmoid"], None, "dpo", dict(beta=0.5)),
    "ipo": (["ipo"], None, "ipo", dict(beta=0.1)),
    "hinge": (["hinge"], None, "hinge", dict(beta=0.1)),
    "robust": (["robust"], None, "robust", dict(beta=0.1, label_smoothing=0.1)),
    "sigmoid+sft (rpo)": (["sigmoid", "sft"], [1.0, 0.5], "rpo", dict(beta=0.1, alpha=0.5)),
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
  """Policy (seed 0) and reference (seed 1): HF folders and our (config, params)."""
  root = tmp_path_factory.mktemp("trl_parity")
  policy_dir = ref.build_gpt2(str(root / "policy"), seed=0)
  ref_dir = ref.build_gpt2(str(root / "reference"), seed=1)
  config, policy_params = load_pretrained(policy_dir)
  _, ref_params = load_pretrained(ref_dir)
  return dict(root=root, policy_dir=policy_dir, ref_dir=ref_dir, config=config,
              policy_params=policy_params, ref_params=ref_params)


_TRL_RUNS = {}


def trl_run(models, case: str) -> dict:
  if case not in _TRL_RUNS:
    loss_types, weights, _, knobs = CASES[case]
    _TRL_RUNS[case] = ref.trl_first_batch(
        models["policy_dir"], models["ref_dir"], PAIRS, str(models["root"] / "out"),
        loss_type=loss_types, loss_weights=weights, beta=knobs["beta"],
        label_smoothing=knobs.get("label_smoothing", 0.0))
  return _TRL_RUNS[case]


def pair_order(trl_batch) -> list[int]:
  """Which of PAIRS each chosen row of TRL's (shuffled) first batch holds."""
  order = []
  for row, mask in zip(trl_batch["input_ids"], trl_batch["attention_mask"]):
    ids = row[mask.astype(bool)].tolist()
    order += [i for i, (p, c, _) in enumerate(PAIRS) if ids == p + c + [ref.EOS_ID]]
  return order[:len(PAIRS)]


def our_batch(order, length: int, pad_id: int) -> dict:
  """Our layout built from the raw token lists: prompt + response + EOS, right padding."""
  prompts = [np.array(PAIRS[i][0]) for i in order]
  out = {}
  for side, k in (("chosen", 1), ("rejected", 2)):
    responses = [np.array(PAIRS[i][k] + [ref.EOS_ID]) for i in order]
    tokens, attention, loss_mask = right_pad(prompts, responses, length, pad_id)
    out.update({f"{side}_tokens": tokens, f"{side}_attention_mask": attention,
                f"{side}_loss_mask": loss_mask})
  return out


def from_trl(trl_batch) -> dict:
  """TRL's collated tensors ([chosen; rejected] rows) in our batch layout."""
  B = len(PAIRS)
  ids, attention, completion = (trl_batch[k].astype(np.int32)
                                for k in ("input_ids", "attention_mask", "completion_mask"))
  return {"chosen_tokens": ids[:B], "chosen_attention_mask": attention[:B],
          "chosen_loss_mask": completion[:B], "rejected_tokens": ids[B:],
          "rejected_attention_mask": attention[B:], "rejected_loss_mask": completion[B:]}


def our_loss(models, name: str, knobs: dict, batch: dict):
  spec = preference_loss(name, **knobs)
  objective = PreferenceObjective(models["config"], spec.loss_term,
                                  average_logps=spec.average_logps,
                                  needs_reference=spec.needs_reference)
  batch = {k: jax.numpy.asarray(v) for k, v in batch.items()}
  loss, metrics = jax.jit(objective.loss)(models["policy_params"], models["ref_params"], batch,
                                          objective.denominators(batch))
  return float(loss), {k: float(v) for k, v in metrics.items()}


def test_tokenisation_and_collation_match_our_layout(models):
  run = trl_run(models, "sigmoid")
  for row, (prompt, chosen, rejected) in zip(run["dataset"], PAIRS):
    assert row["prompt_ids"] == prompt  # no BOS
    assert row["chosen_ids"] == chosen + [ref.EOS_ID]  # EOS appended, part of the completion
    assert row["rejected_ids"] == rejected + [ref.EOS_ID]
  trl_batch = run["batch"]
  order = pair_order(trl_batch)
  assert sorted(order) == list(range(len(PAIRS)))  # the first batch holds every pair once
  T = trl_batch["input_ids"].shape[1]
  assert T == max(len(p) + max(len(c), len(r)) + 1 for p, c, r in PAIRS)  # nothing truncated
  pad_id = ref.EOS_ID  # GPT-2 has no pad token: TRL pads with EOS
  ours = our_batch(order, T, pad_id)
  for key, value in from_trl(trl_batch).items():
    np.testing.assert_array_equal(ours[key], value, err_msg=key)


def test_sequence_logps_match_trl_per_row(models):
  """Per-row summed completion log-probs, policy and reference, from TRL's own code path."""
  run = trl_run(models, "sigmoid")
  batch = {k: jax.numpy.asarray(v) for k, v in from_trl(run["batch"]).items()}
  objective = PreferenceObjective(models["config"], preference_loss("dpo").loss_term)
  for params, expected in ((models["policy_params"], run["policy_logps"]),
                           (models["ref_params"], run["ref_logps"])):
    chosen, rejected, _, _ = jax.jit(objective.sequence_logps)(params, batch)
    np.testing.assert_allclose(np.concatenate([chosen, rejected]), expected, **TOL)
  # a real test: the two models disagree and log-probs are far from uniform
  assert np.abs(run["policy_logps"] - run["ref_logps"]).min() > 0.1


@pytest.mark.parametrize("case", list(CASES))
def test_loss_and_metrics_match_trl(models, case):
  _, _, name, knobs = CASES[case]
  run = trl_run(models, case)
  loss, metrics = our_loss(models, name, knobs, from_trl(run["batch"]))
  prefix = "dpo/" if name == "rpo" else ""
  np.testing.assert_allclose(loss, run["loss"], **TOL, err_msg="loss")
  for key in METRICS:
    np.testing.assert_allclose(metrics[prefix + key], run["metrics"][key], **TOL, err_msg=key)
  assert abs(run["loss"] - np.log(2.0)) > 1e-3 or name != "dpo"


def test_pad_token_does_not_matter(models):
  """Same loss with pad id 0 instead of EOS: masks come from lengths, never from pad ids."""
  run = trl_run(models, "sigmoid")
  T = run["batch"]["input_ids"].shape[1]
  loss, metrics = our_loss(models, "dpo", dict(beta=0.1),
                           our_batch(pair_order(run["batch"]), T, pad_id=0))
  np.testing.assert_allclose(loss, run["loss"], **TOL)
  for key in METRICS:
    np.testing.assert_allclose(metrics[key], run["metrics"][key], **TOL, err_msg=key)
