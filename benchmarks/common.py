"""Shared benchmark helpers: timing with warm-up, machine load, and the peer models."""

from __future__ import annotations

import os
import statistics
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

BENCH_SHAPES = {
    "gpt2": dict(n_layer=8, n_head=8, n_embd=512, vocab_size=8192, n_positions=1024,
                 bos_token_id=8191, eos_token_id=8191),
    "llama": dict(hidden_size=512, intermediate_size=1376, num_hidden_layers=8,
                  num_attention_heads=8, num_key_value_heads=4, vocab_size=8192,
                  max_position_embeddings=1024, tie_word_embeddings=False,
                  bos_token_id=1, eos_token_id=2),
}


def build_peer_model(family: str, seed: int = 0):
  """The benchmark model in transformers (random weights), saved to a temp folder."""
  import torch
  import transformers as tf
  torch.manual_seed(seed)
  cfg = (tf.GPT2Config if family == "gpt2" else tf.LlamaConfig)(**BENCH_SHAPES[family])
  model = tf.AutoModelForCausalLM.from_config(cfg).float().eval()
  path = tempfile.mkdtemp(prefix=f"bench_{family}_")
  model.save_pretrained(path, safe_serialization=True)
  return model, path


def _cpu_times():
  with open("/proc/stat") as f:
    values = list(map(int, f.readline().split()[1:9]))
  return sum(values), values[3] + values[4]


def machine_load(seconds: float = 1.0) -> float:
  """Busy cores over a short window (call while idle): how noisy this run will be."""
  total0, idle0 = _cpu_times()
  time.sleep(seconds)
  total1, idle1 = _cpu_times()
  busy = (total1 - total0) - (idle1 - idle0)
  return os.cpu_count() * busy / max(total1 - total0, 1)


def timed(fn, reps: int = 3, warmup: int = 1) -> dict:
  """Runs fn() warmup + reps times; returns median/min/max seconds of the timed runs."""
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(reps):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return {"median": statistics.median(times), "min": min(times), "max": max(times)}


def fmt(stats: dict) -> str:
  return f"{stats['median']:.3f}s (min {stats['min']:.3f}, max {stats['max']:.3f})"


def save_word_tokenizer(path: str, vocab_size: int, eos_token_id: int,
                        eos_token: str = "<|endoftext|>"):
  """Saves a word-level tokenizer next to a peer model: the word ``t<i>`` is id i (1:1, no
  BOS/EOS added), except ``eos_token_id`` which is ``eos_token``. TRL's trainers take text,
  so random ids travel as ``"t5 t17 t3"``."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers
  from transformers import PreTrainedTokenizerFast
  vocab = {f"t{i}": i for i in range(vocab_size) if i != eos_token_id}
  vocab[eos_token] = eos_token_id
  tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=eos_token))
  tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
  tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
  fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=eos_token, eos_token=eos_token,
                                 unk_token=eos_token, pad_token=eos_token)
  fast.save_pretrained(path)
  assert fast("t5 t17 t3")["input_ids"] == [5, 17, 3]
  return fast


def rss_mb() -> dict:
  """This process's resident memory now (VmRSS) and its peak so far (VmHWM), in MiB."""
  out = {}
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith(("VmRSS:", "VmHWM:")):
        out[line.split(":")[0]] = int(line.split()[1]) / 1024
  return {"rss": out.get("VmRSS", float("nan")), "peak": out.get("VmHWM", float("nan"))}


def reset_peak_rss() -> bool:
  """Resets this process's peak RSS (VmHWM) to its current RSS; False where not allowed."""
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
    return True
  except OSError:
    return False
