"""Synthetic alignment tasks with a known gold reward, small enough for CPU in minutes.

``task = SyntheticTask(SyntheticTaskConfig(seed=0))`` holds a source chain
(:mod:`jaxalign.data.synthetic_source`), an alternate chain and a gold reward
(:mod:`jaxalign.data.synthetic_reward`). From it:

- ``task.sft_rows(n, seed)`` / ``task.prompt_rows(n, seed)``: data for SFT of a tiny reference
  policy and prompts for PPO / online DPO; ``task.nested_prompts(n, seed)``: prompts of the
  same distribution whose sets are nested in ``n`` (extra unlabelled prompts);
- ``task.preference_pairs(n, seed, temperature, beta)``: two responses per prompt from the
  source, labelled by Bradley-Terry on the gold reward (an offline preference dataset);
- knobs: ``prompt_shift`` (a logit bonus for the upper half of the content vocabulary while
  sampling prompts: prompts from another region of the language) and ``response_shift``
  (``(1 - s) * source + s * alternate`` chain logits) plus ``temperature`` (responses from
  another policy), which implicit-vs-explicit reward experiments need;
- ``write_preferences_jsonl`` etc.: the same data as JSONL text, ``"t17 t5 ..."``, readable by
  :func:`jaxalign.data.build_dataset` and tokenised back by :class:`SyntheticTokenizer`.

Ids: pad 0, EOS 1, BOS 2 (``task.model_overrides()`` gives them to a model config, e.g.
``tiny_gpt2(**task.model_overrides())``; vocab_size defaults to 64 <= tiny_gpt2's 256).
"""

from __future__ import annotations

import dataclasses
import json
import math

import jax
import numpy as np

from jaxalign.data import report as reasons
from jaxalign.data.batches import left_pad, right_pad
from jaxalign.data.encoded import PreferenceRows, PromptRows, SFTRows
from jaxalign.data.report import DataError, DataReport
from jaxalign.data.synthetic_reward import bradley_terry_labels, gold_reward, make_gold_reward
from jaxalign.data.synthetic_source import (BOS_ID, EOS_ID, NUM_SPECIAL, PAD_ID,
                                            make_markov_source, sample_prompts,
                                            sample_responses)
from jaxalign.data.synthetic_tokenizer import SyntheticTokenizer

_jit_gold_reward = jax.jit(gold_reward)


@dataclasses.dataclass(frozen=True)
class SyntheticTaskConfig:
  """The language, the prompt/response budget and the gold reward's knobs."""

  vocab_size: int = 64
  min_prompt_length: int = 4  # content tokens (BOS comes on top)
  max_prompt_length: int = 12
  min_response_length: int = 1  # content tokens before EOS may be sampled
  max_response_length: int = 24  # tokens including EOS
  mean_response_length: float = 10.0
  sharpness: float = 2.0
  seed: int = 0
  overlap_weight: float = 1.0
  length_weight: float = 1.0
  target_length: float = 8.0

  @property
  def max_length(self) -> int:
    return self.max_prompt_length + 1 + self.max_response_length


@dataclasses.dataclass
class SyntheticPreferences:
  """Labelled pairs, their gold rewards [N] and what was dropped (identical pairs)."""

  rows: PreferenceRows
  chosen_rewards: np.ndarray
  rejected_rewards: np.ndarray
  report: DataReport

  def batch(self):
    """All pairs as one :class:`PreferenceBatch` of length ``rows.max_length``."""
    return self.rows.batch(np.arange(len(self.rows)), self.rows.max_length)


class SyntheticTask:
  """A seeded synthetic language, its alternate policy and its gold reward."""

  def __init__(self, config: SyntheticTaskConfig = SyntheticTaskConfig()):
    self.config = config
    self.source = make_markov_source(config.vocab_size, config.seed, config.sharpness,
                                     config.mean_response_length)
    self.alternate = make_markov_source(config.vocab_size, config.seed + 10_000,
                                        config.sharpness, config.mean_response_length)
    self.gold_reward = make_gold_reward(config.vocab_size, config.seed, config.overlap_weight,
                                        config.length_weight, config.target_length)
    self.tokenizer = SyntheticTokenizer(config.vocab_size)
    half = NUM_SPECIAL + (config.vocab_size - NUM_SPECIAL) // 2
    self.shifted_region = np.arange(config.vocab_size) >= half  # [V] upper content half

  def model_overrides(self) -> dict:
    return {"vocab_size": self.config.vocab_size, "eos_token_id": EOS_ID,
            "bos_token_id": BOS_ID}

  def _rng(self, seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([self.config.seed, seed, stream])

  def sample_prompts(self, num: int, seed: int, prompt_shift: float = 0.0) -> list[np.ndarray]:
    """Prompts (BOS + content); ``prompt_shift`` > 0 favours the shifted region."""
    cfg = self.config
    return sample_prompts(self.source, self._rng(seed, 0), num, cfg.min_prompt_length,
                          cfg.max_prompt_length, bias=prompt_shift * self.shifted_region)

  def nested_prompts(self, num: int, seed: int, prompt_shift: float = 0.0,
                     block: int = 256) -> list[np.ndarray]:
    """``num`` prompts from the distribution of :meth:`sample_prompts`, drawn in blocks of
    ``block`` from their own random streams, so the first ``k`` of a larger draw are the draw
    of ``k`` (nested prompt sets: 2x, 5x, 10x extra prompts contain one another)."""
    cfg = self.config
    prompts: list[np.ndarray] = []
    for index in range(-(-num // block)):
      prompts += sample_prompts(self.source, self._rng(seed, 1000 + index), block,
                                cfg.min_prompt_length, cfg.max_prompt_length,
                                bias=prompt_shift * self.shifted_region)
    return prompts[:num]

  def sample_responses(self, prompts, seed: int, temperature: float = 1.0,
                       response_shift: float = 0.0, stream: int = 1) -> list[np.ndarray]:
    """One response per prompt (ending in EOS) from the source mixed with the alternate."""
    logits = self.source.transition_logits
    if response_shift:
      finite = np.isfinite(logits)  # both chains forbid the same (special) tokens
      mixed = (1 - response_shift) * np.where(finite, logits, 0.0) + response_shift * np.where(
          finite, self.alternate.transition_logits, 0.0)
      logits = np.where(finite, mixed, -np.inf)
    return sample_responses(logits, prompts, self._rng(seed, stream),
                            self.config.max_response_length, temperature,
                            self.config.min_response_length)

  def rewards(self, prompts, responses) -> np.ndarray:
    """Gold rewards [N] of id lists (padded here, then the jitted reward)."""
    prompt_tokens, prompt_mask = left_pad(prompts, self.config.max_prompt_length + 1, PAD_ID)
    empty = [np.zeros(0, np.int32)] * len(responses)
    response_tokens, response_mask, _ = right_pad(empty, responses,
                                                  self.config.max_response_length, PAD_ID)
    return np.asarray(_jit_gold_reward(self.gold_reward, prompt_tokens, response_tokens,
                                       response_mask, prompt_mask))

  def prompt_rows(self, num: int, seed: int, prompt_shift: float = 0.0) -> PromptRows:
    return PromptRows.from_token_lists(self.sample_prompts(num, seed, prompt_shift), PAD_ID,
                                       self.config.max_prompt_length + 1)

  def sft_rows(self, num: int, seed: int, temperature: float = 1.0, prompt_shift: float = 0.0,
               response_shift: float = 0.0) -> SFTRows:
    """Prompts and reference responses from the source (the SFT data of the reference)."""
    prompts = self.sample_prompts(num, seed, prompt_shift)
    responses = self.sample_responses(prompts, seed, temperature, response_shift)
    return SFTRows.from_token_lists(prompts, responses, PAD_ID, EOS_ID, self.config.max_length)

  def preference_pairs(self, num: int, seed: int, temperature: float = 1.0,
                       beta: float = math.inf, prompt_shift: float = 0.0,
                       response_shift: float = 0.0) -> SyntheticPreferences:
    """An offline preference dataset: 2 responses per prompt, labelled by gold BT(beta).

    Pairs whose two responses are identical are dropped and counted in the report.
    """
    prompts = self.sample_prompts(num, seed, prompt_shift)
    first = self.sample_responses(prompts, seed, temperature, response_shift, stream=1)
    second = self.sample_responses(prompts, seed, temperature, response_shift, stream=2)
    report = DataReport()
    keep = []
    for index, (a, b) in enumerate(zip(first, second)):
      if np.array_equal(a, b):
        report.skip(DataError(reasons.IDENTICAL_RESPONSES, "same sample", f"pair {index}"))
      else:
        report.keep()
        keep.append(index)
    prompts = [prompts[i] for i in keep]
    first, second = [first[i] for i in keep], [second[i] for i in keep]
    rewards_first, rewards_second = self.rewards(prompts, first), self.rewards(prompts, second)
    key = jax.random.fold_in(jax.random.key(self.config.seed), seed)
    prefer_first = np.asarray(bradley_terry_labels(key, rewards_first, rewards_second, beta))
    chosen = [a if p else b for a, b, p in zip(first, second, prefer_first)]
    rejected = [b if p else a for a, b, p in zip(first, second, prefer_first)]
    rows = PreferenceRows.from_token_lists(prompts, chosen, rejected, PAD_ID, EOS_ID,
                                           self.config.max_length)
    return SyntheticPreferences(rows, np.where(prefer_first, rewards_first, rewards_second),
                                np.where(prefer_first, rewards_second, rewards_first), report)


def _text(tokenizer: SyntheticTokenizer, ids, drop: int) -> str:
  """Ids -> text without the BOS / EOS the tokenisation adds back."""
  return tokenizer.decode([i for i in ids if i != drop])


def write_preferences_jsonl(path: str, pairs: SyntheticPreferences,
                            tokenizer: SyntheticTokenizer) -> None:
  """One JSON line per pair; the gold rewards go in ``score_chosen`` / ``score_rejected``."""
  rows = pairs.rows
  with open(path, "w", encoding="utf-8") as handle:
    for i in range(len(rows)):
      handle.write(json.dumps({
          "prompt": _text(tokenizer, rows.prompts[i], BOS_ID),
          "chosen": _text(tokenizer, rows.chosen[i], EOS_ID),
          "rejected": _text(tokenizer, rows.rejected[i], EOS_ID),
          "score_chosen": float(pairs.chosen_rewards[i]),
          "score_rejected": float(pairs.rejected_rewards[i])}) + "\n")


def write_sft_jsonl(path: str, rows: SFTRows, tokenizer: SyntheticTokenizer) -> None:
  with open(path, "w", encoding="utf-8") as handle:
    for prompt, response in zip(rows.prompts, rows.responses):
      handle.write(json.dumps({"prompt": _text(tokenizer, prompt, BOS_ID),
                               "response": _text(tokenizer, response, EOS_ID)}) + "\n")


def write_prompts_jsonl(path: str, rows: PromptRows, tokenizer: SyntheticTokenizer) -> None:
  with open(path, "w", encoding="utf-8") as handle:
    for prompt in rows.prompts:
      handle.write(json.dumps({"prompt": _text(tokenizer, prompt, BOS_ID)}) + "\n")
