"""``jaxalign eval`` and ``jaxalign sample`` on model folders written by ``jaxalign train``."""

from __future__ import annotations

import json

import jax
import numpy as np

from jaxalign import data as D
from jaxalign.config import RunConfig, load_config
from jaxalign.models import CheckpointError, load_model
from jaxalign.parallel import make_mesh
from jaxalign.sampling import generate
from jaxalign.training import setup
from jaxalign.training.runs import make_evaluator, make_objective


def run_eval(model_dir: str, reference_dir: str | None, config_path: str | None,
             overrides: list[str], beta: float) -> dict:
  """Held-out metrics: a reward model's accuracy, or a policy's implicit-reward accuracy
  against ``reference_dir`` (and its gold reward / KL on the synthetic task)."""
  config, params, kind = load_model(model_dir)
  task = "rm" if kind == "reward_model" else "dpo"
  run = load_config(RunConfig, config_path,
                    [f"task={task}", "loss.name=dpo", f"loss.beta={beta}"] + overrides)
  rows, report = setup.build_rows(run, "eval")
  ref_params = None
  if task == "dpo":
    if reference_dir is None:
      raise CheckpointError("evaluating a policy needs --reference (the model it started from)")
    _, ref_params, _ = load_model(reference_dir)
  mesh = make_mesh(run.mesh)
  evaluate = make_evaluator(make_objective(run, config), rows, ref_params,
                            run.data.eval_batch_size, mesh)
  result = {"data": report.summary(), **evaluate(params)}
  if task == "dpo" and run.data.source == "synthetic":
    from jaxalign.eval import sample_and_score
    synthetic = setup.synthetic_task(run)
    prompts = synthetic.prompt_rows(run.data.num_eval, seed=99)
    batch = prompts.batch(np.arange(len(prompts)), prompts.max_length)
    result.update(sample_and_score(
        config, params, ref_params, batch.tokens, batch.attention_mask,
        jax.random.PRNGKey(run.seed), max_new_tokens=synthetic.config.max_response_length,
        eos_id=config.eos_token_id, gold_reward=synthetic.gold_reward))
  return result


def run_sample(model_dir: str, prompts: list[str], tokenizer_dir: str | None, synthetic: bool,
               max_new_tokens: int, temperature: float, top_k: int, top_p: float,
               seed: int) -> list[dict]:
  config, params, kind = load_model(model_dir)
  if kind != "policy":
    raise CheckpointError(f"{model_dir}: holds a {kind}; sampling needs a policy")
  tokenizer = (D.SyntheticTokenizer(config.vocab_size) if synthetic
               else D.load_tokenizer(tokenizer_dir))
  encoded = [tokenizer.encode(p) for p in prompts]
  if any(not ids for ids in encoded):
    raise ValueError("every --prompt must encode to at least one token")
  tokens, mask = D.left_pad([np.asarray(ids) for ids in encoded],
                            max(len(ids) for ids in encoded), tokenizer.pad_id)
  out = generate(config, params, tokens, mask, jax.random.PRNGKey(seed),
                 max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                 top_p=top_p, eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id)
  results = []
  for row, prompt in enumerate(prompts):
    n = int(out.lengths[row])
    ids = np.asarray(out.tokens[row, :n]).tolist()
    results.append({"prompt": prompt, "response": tokenizer.decode(ids), "tokens": ids,
                    "logprob": float(np.asarray(out.logprobs[row]).sum())})
  return results


def print_json(value) -> None:
  print(json.dumps(value, indent=2))
