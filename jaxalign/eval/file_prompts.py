"""Prompts from a file -> samples -> metrics: what ``jaxalign sample`` and ``jaxalign eval
--prompts-file`` run.

``read_prompts``: JSONL / Parquet rows with a ``prompt`` field (a string or chat messages; the
data reader's formats), or any other file as one plain-text prompt per non-empty line.
``encode_prompts``: ids as training encodes prompts (BOS when the tokenizer adds one; chat
messages, or every prompt with ``chat=True``, through the tokenizer's chat template with the
generation prompt). ``sample_rows``: fixed-shape batches through the compiled sampler.
``compare_to_reference``: per prompt, one sample from the policy and one from the
reference; the sequence-level KL(policy || reference) on the policy's samples (both at the
sampling temperature), the reward model's score of both samples, and the policy's win rate
(score above the reference's; ties count 1/2), plus the mean response lengths.
"""

from __future__ import annotations

import os

import jax
import numpy as np

from jaxalign import data as D
from jaxalign.data.files import JSONL_SUFFIXES, PARQUET_SUFFIXES
from jaxalign.data.tokenization import encode_prompt
from jaxalign.eval.policy_eval import _sequence_logps, sequence_scores
from jaxalign.sampling import generate


def read_prompts(path: str) -> list:
  """The prompts of ``path``: strings, or message lists for chat rows."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"--prompts-file {path}: does not exist")
  if path.lower().endswith(JSONL_SUFFIXES + PARQUET_SUFFIXES):
    records, _ = D.read_records(path, "prompt", on_error="raise")
    prompts = [record["prompt"] for record in records]
  else:
    with open(path, encoding="utf-8") as f:
      prompts = [line.rstrip("\n") for line in f if line.strip()]
  if not prompts:
    raise ValueError(f"--prompts-file {path}: no prompts")
  return prompts


def encode_prompts(prompts: list, tokenizer, chat: bool = False) -> list[np.ndarray]:
  """Prompt ids [P_i] per prompt; ``chat`` wraps each string as one user message."""
  encoded = []
  for index, prompt in enumerate(prompts):
    if chat and isinstance(prompt, str):
      prompt = [{"role": "user", "content": prompt}]
    ids = encode_prompt(prompt, tokenizer)
    if not len(ids):
      raise ValueError(f"prompt {index} encodes to no tokens")
    encoded.append(ids)
  return encoded


def check_budget(config, prompt_ids: list[np.ndarray], max_new_tokens: int, name: str) -> None:
  longest = max(len(ids) for ids in prompt_ids)
  if longest + max_new_tokens > config.max_seq_len:
    raise ValueError(f"the longest prompt ({longest} tokens) + --max-new-tokens "
                     f"{max_new_tokens} is beyond {name}'s max_seq_len {config.max_seq_len}")


def batches(prompt_ids: list[np.ndarray], pad_id: int, batch_size: int):
  """Yields (rows, tokens [B, P], mask [B, P]): every batch padded to the same shape (the
  last one repeats its rows; only ``rows`` are real), so the sampler compiles once."""
  length = max(len(ids) for ids in prompt_ids)
  batch_size = min(batch_size, len(prompt_ids))
  for start in range(0, len(prompt_ids), batch_size):
    rows = np.arange(start, min(start + batch_size, len(prompt_ids)))
    padded = np.resize(rows, batch_size)
    tokens, mask = D.left_pad([prompt_ids[i] for i in padded], length, pad_id)
    yield rows, tokens, mask


def sample_rows(config, params, prompt_ids, tokenizer, rng, *, max_new_tokens: int,
                temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                batch_size: int = 32) -> list[dict]:
  """One sample per prompt: ``{"response", "tokens", "logprob"}`` (log-prob at T = 1)."""
  results = []
  for rows, tokens, mask in batches(prompt_ids, tokenizer.pad_id, batch_size):
    out = generate(config, params, tokens, mask, jax.random.fold_in(rng, int(rows[0])),
                   max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                   top_p=top_p, eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id)
    new, lengths, logps = (np.asarray(x) for x in (out.tokens, out.lengths, out.logprobs))
    for i in range(len(rows)):
      ids = new[i, :int(lengths[i])].tolist()
      results.append({"response": tokenizer.decode(ids), "tokens": ids,
                      "logprob": float(logps[i].sum())})
  return results


def compare_to_reference(config, params, ref_params, prompt_ids, tokenizer, rng, *,
                         max_new_tokens: int, temperature: float = 1.0, reward_model=None,
                         batch_size: int = 32) -> tuple[dict, list[dict]]:
  """``(metrics, samples)`` of the module docstring; ``reward_model`` is ``(config, params)``
  or None (then no scores or win rate). ``temperature`` must be > 0 (a KL from samples)."""
  if not temperature > 0:
    raise ValueError(f"--temperature must be > 0 to estimate a KL from samples, got "
                     f"{temperature}")
  columns = {k: [] for k in ("kl", "length", "reference_length", "rm_score",
                             "reference_rm_score")}
  samples = []
  kwargs = dict(max_new_tokens=max_new_tokens, temperature=temperature,
                eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id, return_sequence=True)
  for rows, tokens, mask in batches(prompt_ids, tokenizer.pad_id, batch_size):
    key = jax.random.fold_in(rng, int(rows[0]))
    ours = generate(config, params, tokens, mask, jax.random.fold_in(key, 0), **kwargs)
    theirs = generate(config, ref_params, tokens, mask, jax.random.fold_in(key, 1), **kwargs)
    logps = [_sequence_logps(config, p, ours.sequence, ours.sequence_mask, ours.response_mask,
                             temperature) for p in (params, ref_params)]
    n = len(rows)
    batch = {"kl": np.asarray(logps[0] - logps[1])[:n], "length": np.asarray(ours.lengths)[:n],
             "reference_length": np.asarray(theirs.lengths)[:n]}
    if reward_model is not None:
      rm_config, rm_params = reward_model
      batch["rm_score"] = np.asarray(sequence_scores(rm_config, rm_params, ours.sequence,
                                             ours.sequence_mask))[:n]
      batch["reference_rm_score"] = np.asarray(sequence_scores(rm_config, rm_params, theirs.sequence,
                                                       theirs.sequence_mask))[:n]
    for name, values in batch.items():
      columns[name].append(values)
    for i in range(n):
      ids = np.asarray(ours.tokens[i, :int(ours.lengths[i])]).tolist()
      ref_ids = np.asarray(theirs.tokens[i, :int(theirs.lengths[i])]).tolist()
      samples.append({"response": tokenizer.decode(ids), "tokens": ids,
                      "reference_response": tokenizer.decode(ref_ids),
                      "reference_tokens": ref_ids,
                      **{name: float(values[i]) for name, values in batch.items()}})
  values = {k: np.concatenate(v).astype(np.float64) for k, v in columns.items() if v}
  metrics = {k: float(v.mean()) for k, v in values.items()}
  if reward_model is not None:
    wins = values["rm_score"] > values["reference_rm_score"]
    ties = values["rm_score"] == values["reference_rm_score"]
    metrics["win_rate"] = float(np.mean(wins + 0.5 * ties))
  metrics["num_prompts"] = len(prompt_ids)
  return metrics, samples
