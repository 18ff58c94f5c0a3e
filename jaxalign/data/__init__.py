"""Preference, prompt and SFT data: local files -> TFDS (array_record) -> records -> token ids
-> typed, bucketed, resumable, host-sharded batches; plus synthetic tasks with a gold reward.

Pipeline (docs/data.md)::

  builder, reports = build_dataset("my_prefs", "preference", {"train": "train.jsonl"}, data_dir)
  records = RecordSource(builder.as_data_source("train"), "preference")
  rows, report = tokenize_preferences(records, load_tokenizer(folder), max_length=512)
  for batch in BatchIterator(rows, batch_size=32, seed=0): ...   # PreferenceBatch
"""

from jaxalign.data.batch_iterator import BatchIterator
from jaxalign.data.batches import (PreferenceBatch, PromptBatch, SFTBatch, UnpairedBatch,
                                   bucket_length, default_buckets, left_pad, right_pad)
from jaxalign.data.chat import default_chat, render_chat, split_chat
from jaxalign.data.encoded import PreferenceRows, PromptRows, SFTRows, UnpairedRows, concat_rows
from jaxalign.data.files import detect_kind, read_records
from jaxalign.data.mixture import MixedRows
from jaxalign.data.records import KINDS, parse_record
from jaxalign.data.report import DataError, DataReport
from jaxalign.data.sources import RecordSource, catalog_source, load_local_dataset
from jaxalign.data.synthetic_reward import (GoldReward, bradley_terry_labels,
                                            bradley_terry_probability, gold_reward,
                                            make_gold_reward)
from jaxalign.data.synthetic_source import (BOS_ID, EOS_ID, PAD_ID, MarkovSource,
                                            make_markov_source, token_histogram)
from jaxalign.data.synthetic_tasks import (SyntheticPreferences, SyntheticTask,
                                           SyntheticTaskConfig, write_preferences_jsonl,
                                           write_prompts_jsonl, write_sft_jsonl)
from jaxalign.data.synthetic_tokenizer import SyntheticTokenizer
from jaxalign.data.tfds_builder import (JaxalignLocalFiles, LocalFilesConfig, build_dataset,
                                        dataset_fingerprint, file_fingerprint)
from jaxalign.data.tokenization import (OVERFLOW_POLICIES, fit_row, tokenize_preferences,
                                        tokenize_prompts, tokenize_sft, tokenize_unpaired)
from jaxalign.data.verifiable_task import (AnswerPromptBatch, AnswerPromptRows, VerifiableTask,
                                           VerifiableTaskConfig, VerifiableTokenizer,
                                           check_answers)
from jaxalign.data.tokenizer import (PAD_CANDIDATES, ByteTokenizer, HFTokenizer, Tokenizer,
                                     TokenizerError, byte_tokenizer, load_tokenizer,
                                     read_chat_template)

__all__ = [
    "AnswerPromptBatch", "AnswerPromptRows", "VerifiableTask", "VerifiableTaskConfig",
    "VerifiableTokenizer", "check_answers",
    "BOS_ID", "BatchIterator", "ByteTokenizer", "DataError", "DataReport", "EOS_ID",
    "GoldReward", "HFTokenizer", "JaxalignLocalFiles", "KINDS", "LocalFilesConfig",
    "MarkovSource", "MixedRows", "OVERFLOW_POLICIES", "PAD_CANDIDATES", "PAD_ID",
    "PreferenceBatch", "PreferenceRows", "PromptBatch", "PromptRows", "RecordSource",
    "SFTBatch", "SFTRows", "SyntheticPreferences", "SyntheticTask", "SyntheticTaskConfig",
    "SyntheticTokenizer", "Tokenizer", "TokenizerError", "UnpairedBatch", "UnpairedRows",
    "bradley_terry_labels", "bradley_terry_probability", "bucket_length", "build_dataset",
    "byte_tokenizer", "catalog_source", "concat_rows", "dataset_fingerprint",
    "default_buckets", "default_chat", "detect_kind", "file_fingerprint", "fit_row",
    "gold_reward", "left_pad", "load_local_dataset", "load_tokenizer", "make_gold_reward",
    "make_markov_source", "parse_record", "read_chat_template", "read_records", "render_chat",
    "right_pad", "split_chat", "token_histogram", "tokenize_preferences", "tokenize_prompts",
    "tokenize_sft", "tokenize_unpaired", "write_preferences_jsonl", "write_prompts_jsonl",
    "write_sft_jsonl",
]
