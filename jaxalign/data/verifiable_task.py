"""A built-in task whose answers can be checked exactly: arithmetic and list problems in a
17-word token language, small enough that a tiny transformer partly learns it on CPU.

``task = VerifiableTask(VerifiableTaskConfig(ops=("add",), max_digits=3))``. Problems:

- ``add``:     ``<bos> 4 7 + 1 8 5 =``   answer ``2 3 2 <eos>`` (operands of 1..max_digits
  digits, the sum most significant digit first, no leading zeros);
- ``sort``:    ``<bos> sort 3 1 4 1 =``  answer ``1 1 3 4 <eos>`` (min_items..max_items digits);
- ``reverse``: ``<bos> rev 3 1 4 1 =``   answer ``1 4 1 3 <eos>``.

Ids: pad 0, EOS 1, BOS 2 (as the synthetic tasks), digits ``0..9`` are 3..12, ``+`` 13,
``=`` 14, ``sort`` 15, ``rev`` 16 (:class:`VerifiableTokenizer`, vocab 17 whatever ``ops``).

Held-out split: a problem belongs to the eval split when a seeded hash of its prompt ids falls
below ``eval_fraction`` (``is_eval_prompt``), so train rows (SFT data and RL prompts) never hold
an eval prompt whatever the row counts. Eval rows are distinct problems; ``split_size("eval")``
counts them for a small task (``data.num_eval`` beyond it is a config error). From the task:

- ``sft_rows(n, seed)``: prompt + gold answer + EOS (``sft_noise``: that share of rows gets a
  wrong answer: one digit changed, or a digit dropped or added; default 0);
- ``prompt_rows(n, seed, split)``: :class:`AnswerPromptRows`, prompts with their gold answers;
  their batches are :class:`AnswerPromptBatch` (a ``PromptBatch`` plus ``answer_tokens`` /
  ``answer_mask``), so answers travel with the prompts through the batch iterator, sharding
  and multi-host slicing;
- ``check_answers(completion_tokens, completion_mask, answer_tokens, answer_mask)``: exact
  match on ids (the answer's tokens, then EOS);
- ``model_overrides()``: vocab_size, eos_token_id, bos_token_id for a model preset.

Pass@1 (greedy) and pass@k of a policy: :mod:`jaxalign.rewards.evaluation`; reward functions
for an RL trainer: :mod:`jaxalign.rewards` (docs/rewards.md).
"""

from __future__ import annotations

import dataclasses
import itertools
import zlib
from collections.abc import Sequence

import flax.struct
import numpy as np

from jaxalign.data.batches import PromptBatch
from jaxalign.data.encoded import PromptRows, SFTRows, _as_ids
from jaxalign.data.synthetic_source import BOS_ID, EOS_ID, PAD_ID

WORDS = ("<pad>", "<eos>", "<bos>", "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "+", "=",
         "sort", "rev")
VOCAB_SIZE = len(WORDS)
DIGIT_0 = 3
DIGIT_IDS = tuple(range(DIGIT_0, DIGIT_0 + 10))
PLUS_ID, EQUALS_ID, SORT_ID, REV_ID = 13, 14, 15, 16
OPS = ("add", "sort", "reverse")
ENUMERATE_LIMIT = 50_000  # split_size counts the splits of tasks up to this many problems
_WORD_IDS = {word: i for i, word in enumerate(WORDS)}


@dataclasses.dataclass(frozen=True)
class VerifiableTokenizer:
  """Whitespace-separated words of :data:`WORDS`; ``encode("1 2 + 3 =") == [4, 5, 13, 6,
  14]`` (the prompt encoder adds BOS: ``add_bos``). ``decode`` writes every id, specials as
  ``<pad>`` / ``<eos>`` / ``<bos>``."""

  vocab_size: int = VOCAB_SIZE
  add_bos: bool = True
  chat_template: str | None = None
  pad_id: int = PAD_ID
  eos_id: int = EOS_ID
  bos_id: int | None = BOS_ID

  @property
  def special_tokens(self) -> dict[str, str]:
    return {"pad_token": "<pad>", "eos_token": "<eos>", "bos_token": "<bos>"}

  def encode(self, text: str) -> list[int]:
    ids = []
    for word in text.split():
      if word not in _WORD_IDS:
        raise ValueError(f"not a word of the verifiable task: {word!r} (words: "
                         f"{' '.join(WORDS)})")
      ids.append(_WORD_IDS[word])
    return ids

  def decode(self, ids) -> str:
    return " ".join(WORDS[int(i)] if 0 <= int(i) < VOCAB_SIZE else f"<{int(i)}>" for i in ids)


@dataclasses.dataclass(frozen=True)
class VerifiableTaskConfig:
  """Which problems, how large, the held-out share and the SFT data's noise."""

  ops: tuple[str, ...] = ("add",)
  max_digits: int = 3        # add: operands have 1..max_digits digits
  min_items: int = 3         # sort / reverse: list lengths
  max_items: int = 6
  eval_fraction: float = 0.1  # share of all problems held out for eval (a hash of the prompt)
  sft_noise: float = 0.0     # share of SFT rows whose answer is wrong
  seed: int = 0

  def __post_init__(self):
    ops = (self.ops,) if isinstance(self.ops, str) else tuple(self.ops)
    object.__setattr__(self, "ops", ops)
    unknown = [op for op in ops if op not in OPS]
    if not ops or unknown:
      raise ValueError(f"ops must be a non-empty subset of {OPS}, got {ops}")
    if not 1 <= self.max_digits <= 6:
      raise ValueError(f"max_digits must be in [1, 6], got {self.max_digits}")
    if not 1 <= self.min_items <= self.max_items:
      raise ValueError(f"need 1 <= min_items <= max_items, got {self.min_items}, "
                       f"{self.max_items}")
    if not 0 < self.eval_fraction < 1:
      raise ValueError(f"eval_fraction must be in (0, 1), got {self.eval_fraction}")
    if not 0 <= self.sft_noise <= 1:
      raise ValueError(f"sft_noise must be in [0, 1], got {self.sft_noise}")

  @property
  def max_prompt_length(self) -> int:
    """Prompt tokens including BOS."""
    lengths = {"add": 2 * self.max_digits + 3, "sort": self.max_items + 3,
               "reverse": self.max_items + 3}
    return max(lengths[op] for op in self.ops)

  @property
  def max_answer_length(self) -> int:
    """Answer tokens, EOS not included."""
    lengths = {"add": self.max_digits + 1, "sort": self.max_items, "reverse": self.max_items}
    return max(lengths[op] for op in self.ops)

  @property
  def max_response_length(self) -> int:
    """The longest correct response (answer + EOS): the sampling budget it needs."""
    return self.max_answer_length + 1

  @property
  def max_length(self) -> int:
    return self.max_prompt_length + self.max_response_length


def _digits(value: int) -> list[int]:
  return [DIGIT_0 + int(c) for c in str(value)]


@flax.struct.dataclass
class AnswerPromptBatch(PromptBatch):
  """A :class:`PromptBatch` with each prompt's gold answer.

  tokens, attention_mask [B, P] (left-padded), truncated [B] as ``PromptBatch``;
  answer_tokens [B, A] int32 (right-padded with pad, no EOS), answer_mask [B, A] int32.
  ``A`` is the rows' ``answer_length`` (fixed for a task: one shape).
  """

  answer_tokens: np.ndarray
  answer_mask: np.ndarray


@dataclasses.dataclass
class AnswerPromptRows(PromptRows):
  """:class:`PromptRows` plus ``answers`` (gold answer ids per prompt, no EOS).

  ``batch(indices, length)`` is an :class:`AnswerPromptBatch`; answers are padded to
  ``answer_length`` columns.
  """

  answers: list[np.ndarray] = dataclasses.field(default_factory=list)
  answer_length: int = 0

  def batch(self, indices: Sequence[int], length: int) -> AnswerPromptBatch:
    base = super().batch(indices, length)
    answers = [self.answers[i] for i in indices]
    width = max(self.answer_length, max((len(a) for a in answers), default=0), 1)
    answer_tokens = np.full((len(answers), width), self.pad_id, np.int32)
    answer_mask = np.zeros((len(answers), width), np.int32)
    for row, answer in enumerate(answers):
      answer_tokens[row, :len(answer)] = answer
      answer_mask[row, :len(answer)] = 1
    return AnswerPromptBatch(tokens=base.tokens, attention_mask=base.attention_mask,
                             truncated=base.truncated, answer_tokens=answer_tokens,
                             answer_mask=answer_mask)

  @classmethod
  def from_answers(cls, prompts, answers, pad_id: int, max_length: int | None = None,
                   answer_length: int | None = None, sources=None) -> AnswerPromptRows:
    rows = PromptRows.from_token_lists(prompts, pad_id, max_length, sources)
    answers = _as_ids(answers)
    if len(answers) != len(rows.prompts):
      raise ValueError(f"{len(answers)} answers for {len(rows.prompts)} prompts")
    return cls(rows.prompts, rows.truncated, rows.pad_id, rows.max_length, rows.sources,
               answers, answer_length or max((len(a) for a in answers), default=1))

  def answer_texts(self, tokenizer) -> list[str]:
    return [tokenizer.decode(a) for a in self.answers]


def check_answers(completion_tokens, completion_mask, answer_tokens, answer_mask,
                  eos_id: int = EOS_ID, require_eos: bool = True) -> np.ndarray:
  """Exact match on ids: bool [B], True where the completion is the answer then EOS.

  ``completion_tokens, completion_mask`` [B, T] (the sampler's ``tokens`` and
  ``response_mask``: 1 up to and including the first EOS); ``answer_tokens, answer_mask``
  [B, A] (right-padded). Row b is correct iff, with ``n = answer_mask[b].sum()``, its first
  ``n`` real tokens are the answer's and token ``n`` is EOS (``require_eos=False``: the
  completion is the answer, with or without a following EOS, and nothing else).
  """
  tokens = np.asarray(completion_tokens)
  mask = np.asarray(completion_mask).astype(bool)
  answers = np.asarray(answer_tokens)
  answers_mask = np.asarray(answer_mask).astype(bool)
  B, T = tokens.shape
  if answers.shape[0] != B:
    raise ValueError(f"{B} completions but {answers.shape[0]} answers")
  A = answers.shape[1]
  width = max(T, A + 1)
  padded = np.full((B, width), -1, np.int64)  # -1: no token (matches nothing)
  padded[:, :T] = np.where(mask, tokens, -1)
  lengths = answers_mask.sum(axis=1)  # [B]
  columns = np.arange(A)[None, :]
  prefix_ok = np.all((padded[:, :A] == answers) | (columns >= lengths[:, None]), axis=1)
  after = padded[np.arange(B), lengths]  # the token after the answer
  real_lengths = mask.sum(axis=1)
  if require_eos:
    return prefix_ok & (after == eos_id)
  return prefix_ok & ((after == eos_id) | (real_lengths == lengths))


class VerifiableTask:
  """Seeded problems with exact answers (module docstring)."""

  def __init__(self, config: VerifiableTaskConfig = VerifiableTaskConfig()):
    self.config = config
    self.tokenizer = VerifiableTokenizer()

  def model_overrides(self) -> dict:
    return {"vocab_size": VOCAB_SIZE, "eos_token_id": EOS_ID, "bos_token_id": BOS_ID}

  def _rng(self, seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([self.config.seed, seed, stream, 7919])

  # Problems.
  def _number(self, rng) -> int:
    digits = int(rng.integers(1, self.config.max_digits + 1))
    low = 0 if digits == 1 else 10 ** (digits - 1)
    return int(rng.integers(low, 10 ** digits))

  def _problem(self, rng) -> tuple[list[int], list[int]]:
    """(prompt ids with BOS, answer ids without EOS) of one random problem."""
    cfg = self.config
    op = cfg.ops[int(rng.integers(len(cfg.ops)))]
    if op == "add":
      a, b = self._number(rng), self._number(rng)
      return [BOS_ID, *_digits(a), PLUS_ID, *_digits(b), EQUALS_ID], _digits(a + b)
    items = [int(x) for x in rng.integers(0, 10, int(rng.integers(cfg.min_items,
                                                                  cfg.max_items + 1)))]
    word = SORT_ID if op == "sort" else REV_ID
    answer = sorted(items) if op == "sort" else items[::-1]
    return ([BOS_ID, word, *(DIGIT_0 + x for x in items), EQUALS_ID],
            [DIGIT_0 + x for x in answer])

  def is_eval_prompt(self, prompt) -> bool:
    """Whether ``prompt`` (ids with BOS) is a held-out problem: a seeded CRC32 of its ids
    below ``eval_fraction`` of the range."""
    data = np.asarray([self.config.seed, *prompt], np.int64).tobytes()
    return zlib.crc32(data) / 2 ** 32 < self.config.eval_fraction

  def problem_space(self) -> int:
    """The number of distinct problems (prompts) of the task, both splits together."""
    cfg = self.config
    lists = sum(10 ** n for n in range(cfg.min_items, cfg.max_items + 1))
    sizes = {"add": 10 ** (2 * cfg.max_digits), "sort": lists, "reverse": lists}
    return sum(sizes[op] for op in cfg.ops)

  def _all_prompts(self):
    """Every prompt of the task (ids with BOS), once."""
    cfg = self.config
    for op in cfg.ops:
      if op == "add":
        numbers = [_digits(n) for n in range(10 ** cfg.max_digits)]
        for a in numbers:
          for b in numbers:
            yield [BOS_ID, *a, PLUS_ID, *b, EQUALS_ID]
        continue
      word = SORT_ID if op == "sort" else REV_ID
      for n in range(cfg.min_items, cfg.max_items + 1):
        for items in itertools.product(DIGIT_IDS, repeat=n):
          yield [BOS_ID, word, *items, EQUALS_ID]

  def split_size(self, split: str) -> int | None:
    """The number of distinct problems of ``split``, counted exactly when the task has at
    most ``ENUMERATE_LIMIT`` problems; None for a larger task (about ``problem_space() *
    eval_fraction`` held out)."""
    if self.problem_space() > ENUMERATE_LIMIT:
      return None
    held_out = sum(self.is_eval_prompt(prompt) for prompt in self._all_prompts())
    return held_out if split == "eval" else self.problem_space() - held_out

  def sample_problems(self, num: int, seed: int, split: str = "train"
                      ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``num`` problems of ``split`` ("train": i.i.d., repeats possible; "eval": distinct).
    Returns (prompts with BOS, answers without EOS)."""
    if split not in ("train", "eval"):
      raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    size = self.split_size(split) if num else None
    if size is not None and (size == 0 or split == "eval" and num > size):
      raise ValueError(f"{num} {split} problems asked for, but the {split} split of "
                       f"{self.config} has {size} distinct problems")
    rng = self._rng(seed, 0 if split == "train" else 1)
    prompts, answers, seen = [], [], set()
    attempts = 0
    while len(prompts) < num:
      attempts += 1
      if attempts > 200 * num + 10_000:
        raise ValueError(f"found only {len(prompts)} of {num} {split} problems: the "
                         f"{split} split of {self.config} is too small")
      prompt, answer = self._problem(rng)
      if self.is_eval_prompt(prompt) != (split == "eval"):
        continue
      if split == "eval":
        key = tuple(prompt)
        if key in seen:
          continue
        seen.add(key)
      prompts.append(np.asarray(prompt, np.int32))
      answers.append(np.asarray(answer, np.int32))
    return prompts, answers

  def _corrupt(self, answer: np.ndarray, rng) -> np.ndarray:
    """A wrong answer near ``answer``: one digit changed, dropped or added (a third each; a
    one-digit answer: changed or added, half each). Every change makes it wrong."""
    answer = [int(x) for x in answer]
    kind = rng.integers(3) if len(answer) > 1 else rng.choice([0, 2])
    position = int(rng.integers(len(answer)))
    if kind == 0 or kind == 1 and len(answer) == 1:
      answer[position] = DIGIT_0 + (answer[position] - DIGIT_0 + int(rng.integers(1, 10))) % 10
    elif kind == 1:
      del answer[position]
    else:
      answer.insert(position, DIGIT_0 + int(rng.integers(10)))
    return np.asarray(answer, np.int32)

  # Rows.
  def sft_rows(self, num: int, seed: int, split: str = "train") -> SFTRows:
    """Prompt + answer + EOS (``sft_noise`` of them with a wrong answer)."""
    prompts, answers = self.sample_problems(num, seed, split)
    noise = self.config.sft_noise
    if noise:
      rng = self._rng(seed, 2)
      wrong = rng.random(len(answers)) < noise
      answers = [self._corrupt(a, rng) if w else a for a, w in zip(answers, wrong)]
    responses = [np.append(a, EOS_ID).astype(np.int32) for a in answers]
    return SFTRows.from_token_lists(prompts, responses, PAD_ID, EOS_ID,
                                    self.config.max_length + 1)

  def prompt_rows(self, num: int, seed: int, split: str = "train") -> AnswerPromptRows:
    """Prompts (BOS + problem) with their gold answers."""
    prompts, answers = self.sample_problems(num, seed, split)
    return AnswerPromptRows.from_answers(prompts, answers, PAD_ID,
                                         self.config.max_prompt_length,
                                         self.config.max_answer_length)

  def check(self, completion_tokens, completion_mask, answer_tokens, answer_mask) -> np.ndarray:
    """:func:`check_answers` with this task's EOS."""
    return check_answers(completion_tokens, completion_mask, answer_tokens, answer_mask,
                         EOS_ID)

  def answer_batch(self, answers) -> tuple[np.ndarray, np.ndarray]:
    """``(answer_tokens, answer_mask)`` [B, max_answer_length] from id lists."""
    answers = _as_ids(answers)
    tokens = np.full((len(answers), self.config.max_answer_length), PAD_ID, np.int32)
    mask = np.zeros_like(tokens)
    for row, answer in enumerate(answers):
      tokens[row, :len(answer)] = answer
      mask[row, :len(answer)] = 1
    return tokens, mask


def prompt_batch_of(rows: AnswerPromptRows, indices=None) -> AnswerPromptBatch:
  """All (or ``indices`` of) ``rows`` as one batch at the prompt budget."""
  indices = np.arange(len(rows)) if indices is None else np.asarray(indices)
  return rows.batch(indices, rows.max_length)


__all__ = ["AnswerPromptBatch", "AnswerPromptRows", "DIGIT_IDS", "OPS", "VOCAB_SIZE",
           "VerifiableTask", "VerifiableTaskConfig", "VerifiableTokenizer", "WORDS",
           "check_answers", "prompt_batch_of"]
