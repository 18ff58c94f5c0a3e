"""TRL's DPOTrainer as an independent reference for the DPO family, run fully offline.

Two different tiny random GPT-2s (the policy and the reference) and a word-level tokenizer
whose word ``"t<i>"`` is id ``i`` (TRL 1.x takes text only), so token-id pairs go through
TRL's own tokenisation and collation unchanged. ``trl_first_batch`` builds a real
``DPOTrainer`` and returns its first collated training batch with the loss and reward
metrics TRL computes on it (dropout off, no optimizer step).
"""

from __future__ import annotations

WORDS = 64              # ids 0..63 are the words "t0".."t63"
EOS_ID = WORDS          # id 64 is "<|endoftext|>", GPT-2's EOS (also TRL's pad: no pad token)
VOCAB = WORDS + 1
EOS = "<|endoftext|>"


def make_tokenizer():
  """Word-level tokenizer: ``"t5 t17 t3"`` -> ``[5, 17, 3]``; no BOS/EOS added."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers
  from transformers import PreTrainedTokenizerFast
  vocab = {f"t{i}": i for i in range(WORDS)}
  vocab[EOS] = EOS_ID
  tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=EOS))
  tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
  tok.decoder = decoders.WordPiece(prefix="##")
  # EOS registered as a special token: it is split off even when glued to a word ("t3<|endoftext|>")
  return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOS, eos_token=EOS,
                                 unk_token=EOS)


def build_gpt2(path: str, seed: int) -> str:
  """A tiny random GPT-2 (dropout off, biases and norms moved off their init), saved."""
  import torch
  import transformers as tf
  config = tf.GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=128, vocab_size=VOCAB,
                         bos_token_id=EOS_ID, eos_token_id=EOS_ID, resid_pdrop=0.0,
                         embd_pdrop=0.0, attn_pdrop=0.0)
  torch.manual_seed(seed)
  model = tf.GPT2LMHeadModel(config)
  with torch.no_grad():
    for _, p in model.named_parameters():
      if p.ndim == 1:
        p.add_(0.1 * torch.randn_like(p))
      else:  # larger weights: log-probs far from uniform, so sums and masks matter
        p.mul_(8.0)
  model.float().eval().save_pretrained(path, safe_serialization=True)
  return path


def words(ids) -> str:
  return " ".join(f"t{int(i)}" for i in ids)


def trl_first_batch(policy_dir: str, ref_dir: str, pairs, out_dir: str, *,
                    loss_type: str | list[str], beta: float, label_smoothing: float = 0.0,
                    loss_weights: list[float] | None = None) -> dict:
  """TRL DPOTrainer's first training batch and what it computes on it.

  ``pairs``: ``(prompt_ids, chosen_ids, rejected_ids)`` without EOS (TRL appends it).
  Returns a dict: ``batch`` (numpy ``input_ids, attention_mask, completion_mask`` [2B, T],
  the B chosen rows then the B rejected rows, in the sampler's order), ``loss`` and
  ``metrics`` (what ``compute_loss`` logs), ``dataset`` (TRL's tokenised rows) and
  ``policy_logps, ref_logps`` ([2B] per-row sequence log-probs from TRL's own
  ``compute_ref_log_probs``).
  """
  import torch
  import transformers as tf
  from datasets import Dataset
  from trl import DPOConfig, DPOTrainer

  tok = make_tokenizer()
  data = Dataset.from_dict({
      "prompt": [words(p) for p, _, _ in pairs],
      "chosen": [" " + words(c) for _, c, _ in pairs],
      "rejected": [" " + words(r) for _, _, r in pairs],
  })
  # activation checkpointing off (TRL's default is on); transformers 5 renamed the field
  checkpointing = ("activation_checkpointing" if "activation_checkpointing"
                   in DPOConfig.__dataclass_fields__ else "gradient_checkpointing")
  args = DPOConfig(
      output_dir=out_dir, per_device_train_batch_size=len(pairs), gradient_accumulation_steps=1,
      max_steps=1, loss_type=[loss_type] if isinstance(loss_type, str) else list(loss_type),
      loss_weights=loss_weights, beta=beta, label_smoothing=label_smoothing,
      max_length=None, bf16=False, fp16=False, use_cpu=True,
      report_to=[], save_strategy="no", disable_tqdm=True, dataloader_num_workers=0,
      dataloader_drop_last=False, precompute_ref_log_probs=False, disable_dropout=True, seed=0,
      logging_steps=1, **{checkpointing: False})
  load = lambda d: tf.AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32)
  policy, ref = load(policy_dir), load(ref_dir)
  trainer = DPOTrainer(model=policy, ref_model=ref, args=args, train_dataset=data,
                       processing_class=tok)
  batch = next(iter(trainer.get_train_dataloader()))
  trainer.model.eval()
  with torch.no_grad():
    loss = trainer.compute_loss(trainer.model, batch).item()
    metrics = {k: v[-1] for k, v in trainer._metrics["eval"].items()}
    policy_logps = torch.cat(trainer.compute_ref_log_probs(trainer.model, batch))
    ref_logps = torch.cat(trainer.compute_ref_log_probs(trainer.ref_model, batch))
  return {
      "batch": {k: batch[k].cpu().numpy()
                for k in ("input_ids", "attention_mask", "completion_mask")},
      "loss": loss, "metrics": metrics,
      "dataset": [dict(row) for row in trainer.train_dataset],
      "policy_logps": policy_logps.cpu().numpy(), "ref_logps": ref_logps.cpu().numpy(),
  }
