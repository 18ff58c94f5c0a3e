"""Bucketing, deterministic shuffling, resumable state and host sharding."""

import numpy as np
import pytest

from jaxalign.data import (BatchIterator, PreferenceRows, PromptRows, SFTRows, bucket_length,
                           default_buckets)


def _sft_rows(count=20):
  """Row i: prompt [i+3], response of 1 + i % 7 content tokens then EOS (1); pad 0."""
  prompts = [[i + 3] for i in range(count)]
  responses = [[3] * (1 + i % 7) + [1] for i in range(count)]
  return SFTRows.from_token_lists(prompts, responses, pad_id=0, eos_id=1, max_length=64)


def _row_ids(batch):
  return batch.tokens[:, 0].tolist()  # the prompt token identifies the row (id + 3)


def _take(iterator, count):
  return [_row_ids(next(iterator)) for _ in range(count)]


def test_buckets():
  assert default_buckets(100) == (16, 32, 64, 100)
  assert default_buckets(64) == (16, 32, 64)
  assert [bucket_length(n, (16, 32, 64)) for n in (1, 16, 17, 64)] == [16, 16, 32, 64]
  with pytest.raises(ValueError, match="exceeds"):
    bucket_length(65, (16, 32, 64))


def test_batches_have_bucketed_static_shapes():
  rows = _sft_rows()
  iterator = BatchIterator(rows, 4, seed=0, buckets=(4, 8, 16), num_epochs=1)
  batches = list(iterator)
  assert len(batches) == 5
  for batch in batches:
    longest = int(batch.attention_mask.sum(axis=1).max())
    assert batch.tokens.shape[1] == bucket_length(longest, (4, 8, 16))
    assert batch.tokens.dtype == np.int32 and batch.loss_mask.shape == batch.tokens.shape


def test_shuffling_is_deterministic_per_seed_and_epoch():
  first = _take(BatchIterator(_sft_rows(), 4, seed=1), 10)
  assert first == _take(BatchIterator(_sft_rows(), 4, seed=1), 10)
  assert first != _take(BatchIterator(_sft_rows(), 4, seed=2), 10)
  epoch_0, epoch_1 = first[:5], first[5:]
  assert epoch_0 != epoch_1  # reshuffled each epoch
  assert sorted(sum(epoch_0, [])) == sorted(sum(epoch_1, [])) == list(range(3, 23))
  ordered = _take(BatchIterator(_sft_rows(), 4, shuffle=False), 2)
  assert ordered == [[3, 4, 5, 6], [7, 8, 9, 10]]


def test_state_restore_gives_the_identical_continuation():
  rows = _sft_rows(22)  # 2 rows unused per epoch
  reference = BatchIterator(rows, 4, seed=7)
  expected = [next(reference) for _ in range(13)]
  interrupted = BatchIterator(rows, 4, seed=7)
  for _ in range(6):
    next(interrupted)
  state = interrupted.get_state()
  assert state == {"seed": 7, "epoch": 1, "position": 1, "num_rows": 22}
  assert all(isinstance(value, int) for value in state.values())
  resumed = BatchIterator(rows, 4, seed=7)
  resumed.set_state(state)
  for want in expected[6:]:
    got = next(resumed)
    np.testing.assert_array_equal(got.tokens, want.tokens)
    np.testing.assert_array_equal(got.loss_mask, want.loss_mask)


def test_state_from_another_run_is_refused():
  state = BatchIterator(_sft_rows(), 4, seed=7).get_state()
  with pytest.raises(ValueError, match="seed"):
    BatchIterator(_sft_rows(), 4, seed=8).set_state(state)
  with pytest.raises(ValueError, match="num_rows"):
    BatchIterator(_sft_rows(21), 4, seed=7).set_state(state)


def test_process_shards_partition_the_global_batch():
  rows = _sft_rows(24)
  single = BatchIterator(rows, 8, seed=3, num_epochs=1)
  hosts = [BatchIterator(rows, 8, seed=3, num_epochs=1, process_index=p, process_count=4)
           for p in range(4)]
  for global_batch in single:
    local = [next(host) for host in hosts]
    assert all(b.tokens.shape == (2, global_batch.tokens.shape[1]) for b in local)
    np.testing.assert_array_equal(np.concatenate([b.tokens for b in local]),
                                  global_batch.tokens)
    ids = sum((_row_ids(b) for b in local), [])
    assert len(set(ids)) == 8
  with pytest.raises(ValueError, match="divisible"):
    BatchIterator(rows, 6, process_count=4)


def test_preference_and_prompt_batches_through_the_iterator():
  prefs = PreferenceRows.from_token_lists([[5], [6]], [[7, 1], [7, 7, 1]], [[8, 1], [9, 1]],
                                          pad_id=0, eos_id=1)
  batch = next(BatchIterator(prefs, 2, shuffle=False))
  assert batch.chosen_tokens.shape == batch.rejected_tokens.shape == (2, 4)
  prompts = PromptRows.from_token_lists([[5, 6, 7], [8]], pad_id=0, max_length=4)
  batch = next(BatchIterator(prompts, 2, shuffle=False, buckets=(4,)))
  np.testing.assert_array_equal(batch.tokens, [[0, 5, 6, 7], [0, 0, 0, 8]])
  np.testing.assert_array_equal(batch.attention_mask, [[0, 1, 1, 1], [0, 0, 0, 1]])
