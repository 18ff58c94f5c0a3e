"""The verifiable task: answers are right (decoded and recomputed in Python), the eval split
is disjoint from train whatever the row counts, ``sft_noise`` is the share of wrong SFT
answers, the tokenizer round-trips, answers travel with their prompts through batches,
slices and host shards, and bad ``data.verifiable_*`` keys are one-line config errors."""

import itertools

import jax
import numpy as np
import pytest

from jaxalign import data as D
from jaxalign.cli.main import main
from jaxalign.config import ConfigError, RunConfig, load_config
from jaxalign.config.validate import resolve_run, validate_run
from jaxalign.data.verifiable_task import VOCAB_SIZE, WORDS
from jaxalign.training.setup import build_prompt_rows, build_rows

ALL_OPS = ("add", "sort", "reverse")
TOKENIZER = D.VerifiableTokenizer()


def solve(prompt_text: str) -> str:
  """The answer of a decoded prompt (``<bos> 4 7 + 1 8 5 =``), computed from its text."""
  words = prompt_text.split()
  assert words[0] == "<bos>" and words[-1] == "=", prompt_text
  body = words[1:-1]
  if body[0] == "sort":
    return " ".join(sorted(body[1:]))
  if body[0] == "rev":
    return " ".join(body[:0:-1])
  plus = body.index("+")
  left, right = "".join(body[:plus]), "".join(body[plus + 1:])
  for number in (left, right):
    assert number == str(int(number)), f"leading zero in {prompt_text!r}"
  return " ".join(str(int(left) + int(right)))


def _texts(ids_list):
  return [TOKENIZER.decode(ids) for ids in ids_list]


@pytest.fixture(scope="module")
def task():
  return D.VerifiableTask(D.VerifiableTaskConfig(ops=ALL_OPS, max_digits=3, min_items=2,
                                                 max_items=5))


def test_prompt_rows_answers_are_right_and_within_the_budgets(task):
  cfg = task.config
  for split in ("train", "eval"):
    rows = task.prompt_rows(300, seed=5, split=split)
    kinds = set()
    for prompt, answer in zip(_texts(rows.prompts), rows.answer_texts(TOKENIZER)):
      assert answer == solve(prompt)
      kinds.add("add" if "+" in prompt else prompt.split()[1])
    assert kinds == {"add", "sort", "rev"}
    assert max(rows.lengths()) <= cfg.max_prompt_length == rows.max_length
    assert max(len(a) for a in rows.answers) <= cfg.max_answer_length
  lists = [p.split()[2:-1] for p in _texts(rows.prompts) if "+" not in p]
  assert {len(items) for items in lists} == {2, 3, 4, 5}
  numbers = [w for p in _texts(rows.prompts) if "+" in p
             for w in "".join(p.split()[1:-1]).split("+")]
  assert {len(n) for n in numbers} == {1, 2, 3}


def test_sft_rows_are_prompt_answer_eos(task):
  rows = task.sft_rows(200, seed=1)
  for prompt, response in zip(rows.prompts, rows.responses):
    assert response[-1] == D.EOS_ID
    assert TOKENIZER.decode(response[:-1]) == solve(TOKENIZER.decode(prompt))
  assert not rows.truncated.any()
  batch = rows.batch(np.arange(4), rows.max_length)
  np.testing.assert_array_equal(batch.loss_mask.sum(1), [len(r) for r in rows.responses[:4]])


@pytest.mark.parametrize("noise", [0.0, 0.3, 1.0])
def test_sft_noise_is_the_share_of_wrong_answers(noise):
  task = D.VerifiableTask(D.VerifiableTaskConfig(ops=ALL_OPS, sft_noise=noise))
  n = 3000
  rows = task.sft_rows(n, seed=1)
  wrong = np.array([TOKENIZER.decode(r[:-1]) != solve(TOKENIZER.decode(p))
                    for p, r in zip(rows.prompts, rows.responses)])
  assert abs(wrong.mean() - noise) <= 4 * np.sqrt(noise * (1 - noise) / n)
  clean = D.VerifiableTask(D.VerifiableTaskConfig(ops=ALL_OPS)).sft_rows(n, seed=1)
  for a, b in zip(rows.prompts, clean.prompts):  # noise changes answers, not problems
    np.testing.assert_array_equal(a, b)
  assert all(len(r) >= 2 and r[-1] == D.EOS_ID for r in rows.responses)  # still digits + EOS


@pytest.mark.parametrize("config, num_train, num_eval", [
    ({}, 5000, 300),
    ({"max_digits": 1}, 2000, 9),            # 100 problems: 9 held out, 91 train
    ({"ops": ("sort",), "min_items": 1, "max_items": 2}, 500, 10),
    ({"ops": ALL_OPS, "seed": 4}, 1000, 50),
])
def test_eval_split_is_disjoint_from_train_whatever_the_row_counts(config, num_train, num_eval):
  task = D.VerifiableTask(D.VerifiableTaskConfig(**config))
  train = {tuple(p) for p in task.sft_rows(num_train, seed=1).prompts}
  train |= {tuple(p) for p in task.prompt_rows(num_train, seed=5).prompts}
  eval_sft = [tuple(p) for p in task.sft_rows(num_eval, seed=2, split="eval").prompts]
  eval_prompts = [tuple(p) for p in task.prompt_rows(num_eval, seed=6, split="eval").prompts]
  for held_out in (eval_sft, eval_prompts):
    assert len(set(held_out)) == num_eval  # distinct
    assert not set(held_out) & train


def test_a_small_task_splits_its_whole_problem_space():
  """max_digits=1: the 100 sums a + b (a, b in 0..9) are split 9 / 91; enough train rows reach
  all 91 and the eval rows are the 9 others."""
  task = D.VerifiableTask(D.VerifiableTaskConfig(max_digits=1))
  space = {tuple(TOKENIZER.encode(f"<bos> {a} + {b} =")) for a in range(10) for b in range(10)}
  assert task.problem_space() == len(space) == 100
  train = {tuple(p) for p in task.prompt_rows(3000, seed=5).prompts}
  held_out = {tuple(p) for p in task.prompt_rows(task.split_size("eval"), 6, "eval").prompts}
  assert train | held_out == space and not train & held_out
  assert (len(held_out), len(train)) == (task.split_size("eval"), task.split_size("train"))
  with pytest.raises(ValueError, match="10 eval problems asked for.*has 9"):
    task.prompt_rows(10, seed=6, split="eval")


def test_held_out_share_is_the_eval_fraction():
  """A seeded hash of the prompt: about eval_fraction of every problem space, another set for
  another seed."""
  sizes = []
  for seed in (0, 1):
    task = D.VerifiableTask(D.VerifiableTaskConfig(max_digits=2, seed=seed))
    held = [p for p in task._all_prompts() if task.is_eval_prompt(p)]
    assert abs(len(held) / 10_000 - 0.1) < 4 * np.sqrt(0.09 / 10_000)
    sizes.append({tuple(p) for p in held})
  assert len(sizes[0] & sizes[1]) < 0.2 * len(sizes[0])
  sort = D.VerifiableTask(D.VerifiableTaskConfig(ops=("sort",), min_items=1, max_items=4))
  assert sort.problem_space() == 10 + 100 + 1000 + 10_000
  assert sum(1 for _ in sort._all_prompts()) == sort.problem_space()


def test_tokenizer_round_trip():
  rng = np.random.default_rng(0)
  for _ in range(50):
    ids = [int(i) for i in rng.integers(0, VOCAB_SIZE, rng.integers(1, 12))]
    assert TOKENIZER.encode(TOKENIZER.decode(ids)) == ids
  text = "<bos> sort 3 1 4 =   1 3 4 <eos>"
  assert TOKENIZER.decode(TOKENIZER.encode(text)) == " ".join(text.split())
  assert TOKENIZER.encode("1 2 + 3 =") == [4, 5, 13, 6, 14]
  assert [TOKENIZER.decode([i]) for i in range(VOCAB_SIZE)] == list(WORDS)
  assert (TOKENIZER.pad_id, TOKENIZER.eos_id, TOKENIZER.bos_id) == (0, 1, 2)
  with pytest.raises(ValueError, match="'x'"):
    TOKENIZER.encode("1 x 2")


def _check_batch(batch):
  """Each row's answer is the answer of that row's prompt."""
  for tokens, mask, answer, answer_mask in zip(batch.tokens, batch.attention_mask,
                                               batch.answer_tokens, batch.answer_mask):
    assert TOKENIZER.decode(answer[answer_mask > 0]) == solve(TOKENIZER.decode(tokens[mask > 0]))


def test_answers_travel_with_prompts_through_batches_slices_and_host_shards(task):
  rows = task.prompt_rows(40, seed=5)
  batch = rows.batch(np.arange(40)[::-1], rows.max_length)
  assert isinstance(batch, D.AnswerPromptBatch) and isinstance(batch, D.PromptBatch)
  assert batch.answer_tokens.shape == (40, task.config.max_answer_length)
  _check_batch(batch)
  _check_batch(jax.tree_util.tree_map(lambda x: x[5:17:3], batch))  # a pytree slice
  # Two hosts: each builds its half of every global batch; together they are the global one.
  hosts = [D.BatchIterator(rows, 8, seed=3, process_index=i, process_count=2) for i in (0, 1)]
  whole = D.BatchIterator(rows, 8, seed=3)
  for _ in range(7):  # past the first epoch
    parts, full = [next(h) for h in hosts], next(whole)
    for part in parts:
      assert isinstance(part, D.AnswerPromptBatch) and part.tokens.shape[0] == 4
      _check_batch(part)
    np.testing.assert_array_equal(
        np.concatenate([p.answer_tokens for p in parts]), full.answer_tokens)
  both = D.concat_rows([rows, task.prompt_rows(8, seed=6, split="eval")])
  assert len(both) == 48 and both.answer_length == rows.answer_length
  _check_batch(both.batch(np.arange(48), both.max_length))


def _validate(*overrides):
  run = load_config(RunConfig, None, ["data.source=verifiable", *overrides])
  validate_run(resolve_run(run))


BAD = [  # (overrides, the key the message names)
    (["task=sft", "data.verifiable_ops=add,mul"], "data.verifiable_ops"),
    (["task=sft", "data.verifiable_ops=add,"], "data.verifiable_ops"),
    (["task=sft", "data.verifiable_max_digits=0"], "data.verifiable_max_digits"),
    (["task=sft", "data.verifiable_max_digits=7"], "data.verifiable_max_digits"),
    (["task=sft", "data.verifiable_min_items=5", "data.verifiable_max_items=4"],
     "data.verifiable_min_items"),
    (["task=sft", "data.verifiable_sft_noise=1.5"], "data.verifiable_sft_noise"),
    (["task=sft", "data.verifiable_sft_noise=-0.1"], "data.verifiable_sft_noise"),
    (["task=sft", "data.num_train=0"], "data.num_train"),
    (["task=sft", "data.num_eval=0"], "data.num_eval"),
    (["task=sft", "data.verifiable_max_digits=1", "data.num_eval=256"], "data.num_eval=256"),
    (["task=sft", "data.verifiable_ops=sort", "data.verifiable_min_items=1",
      "data.verifiable_max_items=2", "data.num_eval=11"], "data.num_eval=11"),
    (["task=dpo"], "data.source=verifiable"),
    (["task=rm"], "data.source=verifiable"),
]


@pytest.mark.parametrize("overrides, key", BAD, ids=[" ".join(o) for o, _ in BAD])
def test_bad_verifiable_keys_are_one_line_errors_naming_the_key(overrides, key):
  with pytest.raises(ConfigError) as error:
    _validate(*overrides)
  message = str(error.value)
  assert key in message and "\n" not in message, message


def test_good_verifiable_configs_validate():
  _validate("task=sft")
  _validate("task=sft", "data.verifiable_ops=add, sort,reverse", "data.verifiable_sft_noise=1")
  _validate("task=sft", "data.verifiable_max_digits=1", "data.num_eval=9")


def test_cli_exits_2_with_one_line_before_writing(tmp_path, capsys):
  out = tmp_path / "run"
  code = main(["train", "sft", "--no-progress", "--output-dir", str(out), "--set",
               "data.source=verifiable", "--set", "data.verifiable_ops=add,mull"])
  assert code == 2
  lines = capsys.readouterr().err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("jaxalign: error: ")
  assert "data.verifiable_ops" in lines[0] and not out.exists()


def test_run_rows_come_from_the_verifiable_keys():
  run = load_config(RunConfig, None, [
      "task=sft", "data.source=verifiable", "data.verifiable_ops=sort,reverse",
      "data.verifiable_min_items=2", "data.verifiable_max_items=3", "data.task_seed=7",
      "data.verifiable_sft_noise=0.5", "data.num_train=64", "data.num_eval=16"])
  expected = D.VerifiableTask(D.VerifiableTaskConfig(ops=("sort", "reverse"), min_items=2,
                                                     max_items=3, sft_noise=0.5, seed=7))
  rows, _ = build_rows(run, "train")
  reference = expected.sft_rows(64, 1)
  for got, want in itertools.chain(zip(rows.prompts, reference.prompts),
                                   zip(rows.responses, reference.responses)):
    np.testing.assert_array_equal(got, want)
  eval_rows, _ = build_rows(run, "eval")
  assert len(eval_rows) == 16
  prompts, _ = build_prompt_rows(run, "eval", max_new_tokens=8)
  assert isinstance(prompts, D.AnswerPromptRows) and len(prompts) == 16
  for prompt, answer in zip(_texts(prompts.prompts), prompts.answer_texts(TOKENIZER)):
    assert answer == solve(prompt)


@pytest.mark.parametrize("bad", [{"ops": ()}, {"ops": ("mul",)}, {"max_digits": 0},
                                 {"min_items": 0}, {"min_items": 4, "max_items": 3},
                                 {"eval_fraction": 0.0}, {"eval_fraction": 1.0},
                                 {"sft_noise": 2.0}])
def test_task_config_rejects_bad_values(bad):
  with pytest.raises(ValueError):
    D.VerifiableTaskConfig(**bad)


def test_task_config_lengths():
  """add 999 + 999 = 1998: prompt BOS + 3 + 1 + 3 + 1 = 9, answer 4; sort of 6 items: 9, 6."""
  cfg = D.VerifiableTaskConfig(ops=("add",), max_digits=3)
  assert (cfg.max_prompt_length, cfg.max_answer_length, cfg.max_response_length) == (9, 4, 5)
  cfg = D.VerifiableTaskConfig(ops=("add", "sort"), max_digits=2, max_items=6)
  assert (cfg.max_prompt_length, cfg.max_answer_length) == (9, 6)
  assert D.VerifiableTaskConfig(ops="reverse").ops == ("reverse",)
