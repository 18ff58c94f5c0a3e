"""``jaxalign eval``: a trained model judged as its own run would judge it.

The run config is the model folder's (``run_config.yaml``, written with the model; for older
folders the ``config.yaml`` of the run folder above ``model/``), or ``--config``; ``--set``
overrides it, ``--beta`` overrides ``loss.beta``. The task follows the model: a reward model
gets its accuracy on the eval pairs, an SFT policy its SFT loss, any other policy its run's
preference loss and implicit-reward metrics against the reference. The reference is
``--reference``, else the run's ``model.reference_from``, else the policy the run started
from (its ``model.init_from`` / ``model.path`` / seeded preset). Nothing is written into the
training run's folder: the eval set's TFDS copy goes to a temporary folder.

``--prompts-file``: one sample per prompt from the policy and from the reference; reports
the KL to the reference, response lengths and, with a reward model (``--reward-model``, else
the run's ``online.reward_model``), its scores and the policy's win rate against the
reference (``jaxalign.eval.file_prompts.compare_to_reference``).
"""

from __future__ import annotations

import os
import tempfile

import jax
import numpy as np

from jaxalign.cli.inspect_cmds import policy_folder, warn_default_template, write_jsonl
from jaxalign.config import ConfigError, RunConfig, load_config
from jaxalign.eval.file_prompts import (check_budget, compare_to_reference, encode_prompts,
                                        read_prompts)
from jaxalign.models import load_model, read_model_meta
from jaxalign.parallel import make_mesh
from jaxalign.training import setup
from jaxalign.training.compat import check_reward_model, check_same_architecture
from jaxalign.training.tokenizers import BYTES, RUN_CONFIG, model_tokenizer

# A mesh belongs to the machine, not the model: evaluate on whatever this one has.
_MESH_DEFAULTS = ["mesh.data=-1", "mesh.fsdp=1", "mesh.tensor=1"]


def recorded_config(model_dir: str) -> str:
  """The run config that trained ``model_dir``."""
  for path in (os.path.join(model_dir, RUN_CONFIG),
               os.path.join(os.path.dirname(os.path.abspath(model_dir)), "config.yaml")):
    if os.path.exists(path):
      return path
  raise ConfigError(f"--model {model_dir}: no {RUN_CONFIG} (nor a run folder's config.yaml "
                    "above it) says how it was trained; pass --config")


def _trained_task(model_dir: str, config_path: str | None) -> str:
  return load_config(RunConfig, config_path or recorded_config(model_dir), []).task


def eval_run(model_dir: str, kind: str, config_path: str | None, overrides: list[str],
             beta: float | None, scratch: str) -> RunConfig:
  """The run config to evaluate with (module docstring)."""
  path = config_path or recorded_config(model_dir)
  trained = _trained_task(model_dir, config_path)
  task = ("rm" if kind == "reward_model" else
          trained if trained in ("sft", "online-dpo") else "dpo")
  record = read_model_meta(model_dir)[2].get("tokenizer") or {}
  tokenizer = {"hf": [f"data.tokenizer={model_dir}"], BYTES: [f"data.tokenizer={BYTES}"]}.get(
      record.get("kind"), [])
  forced = [f"task={task}", f"output_dir={scratch}"] + _MESH_DEFAULTS + tokenizer
  if beta is not None:
    forced.append(f"loss.beta={beta}")
  return load_config(RunConfig, path, forced + list(overrides))


def load_reference(run: RunConfig, policy_config, reference_dir: str | None):
  """(params, name) of the reference: ``--reference``, ``model.reference_from``, or the
  run's start policy; checked against the policy's architecture before loading."""
  path = reference_dir or run.model.reference_from
  if path is None:
    name = f"the run's start policy ({run.model.init_from or run.model.path or 'seeded preset'})"
    config, params = setup.load_policy(run, setup.vocab_overrides(run))
    check_same_architecture(policy_config, "--model", config, name)
    return params, name
  key = "--reference" if reference_dir else "model.reference_from"
  name = f"{key}={path}"
  config, load_params = policy_folder(path, key)  # a jaxalign or a Hugging Face folder
  check_same_architecture(policy_config, "--model", config, name)
  return load_params(), name


class _PromptEval:
  """``--prompts-file``: prompts encoded and the reward model checked up front (before any
  weights load); ``metrics`` samples and scores."""

  def __init__(self, run, config, model_dir, prompts_file, reward_model, chat, max_new_tokens):
    self.tokenizer = model_tokenizer(model_dir)
    self.prompts = read_prompts(prompts_file)
    warn_default_template(self.tokenizer, chat, self.prompts)
    self.encoded = encode_prompts(self.prompts, self.tokenizer, chat)
    check_budget(config, self.encoded, max_new_tokens, f"--model {model_dir}")
    self.rm_path = reward_model or run.online.reward_model
    if self.rm_path:
      key = "--reward-model" if reward_model else "online.reward_model"
      longest = max(len(ids) for ids in self.encoded) + max_new_tokens
      check_reward_model(config, f"--model {model_dir}", self.rm_path, key, self.tokenizer,
                         f"the tokenizer of --model {model_dir}", longest)

  def metrics(self, config, params, ref_params, max_new_tokens, temperature, seed, batch_size,
              samples_output) -> dict:
    rm = load_model(self.rm_path)[:2] if self.rm_path else None
    metrics, samples = compare_to_reference(
        config, params, ref_params, self.encoded, self.tokenizer, jax.random.PRNGKey(seed),
        max_new_tokens=max_new_tokens, temperature=temperature, reward_model=rm,
        batch_size=batch_size)
    if samples_output:
      write_jsonl(samples_output, [{"prompt": p, **s} for p, s in zip(self.prompts, samples)])
    return {f"samples/{k}": v for k, v in metrics.items()}


def run_eval(model_dir: str, reference_dir: str | None = None, config_path: str | None = None,
             overrides: list[str] = (), beta: float | None = None,
             prompts_file: str | None = None, reward_model: str | None = None,
             max_new_tokens: int = 64, temperature: float = 1.0, chat: bool = False,
             seed: int = 0, batch_size: int = 32, samples_output: str | None = None) -> dict:
  """Metrics of ``model_dir`` (module docstring) as a flat dict."""
  from jaxalign.training.runs import make_evaluator, make_objective
  config, kind, _ = read_model_meta(model_dir)
  if kind == "reward_model" and (prompts_file or reference_dir):
    raise ValueError(f"--model {model_dir} is a reward model: --prompts-file and --reference "
                     "evaluate policies (pass the reward model as --reward-model)")
  if not temperature > 0:
    raise ValueError(f"--temperature must be > 0 to estimate a KL from samples, got "
                     f"{temperature}")
  with tempfile.TemporaryDirectory(prefix="jaxalign-eval-") as scratch:
    run = eval_run(model_dir, kind, config_path, overrides, beta, scratch)
    rows_eval = run.data.source == "synthetic" or bool(run.data.eval_file)
    if kind == "policy" and run.data.source == "files" and _trained_task(model_dir,
                                                                          config_path) == "ppo":
      # A PPO run's data files are prompts: preference pairs only when asked for.
      rows_eval = any(o.startswith("data.eval_file=") for o in overrides)
    if not rows_eval and not prompts_file:
      raise ConfigError("nothing to evaluate: the run has no data.eval_file; pass --set "
                        "data.eval_file=FILE or --prompts-file FILE")
    prompt_eval = prompts_file and _PromptEval(run, config, model_dir, prompts_file,
                                               reward_model, chat, max_new_tokens)
    _, params, _ = load_model(model_dir)
    ref_params, ref_name = (None, None) if kind == "reward_model" else load_reference(
        run, config, reference_dir)
    result = {"model": model_dir, "task": run.task}
    if ref_name:
      result["reference"] = ref_name
    if rows_eval:
      rows, report = setup.build_rows(run, "eval")
      objective = make_objective(run, config, rows)
      evaluate = make_evaluator(objective, rows, ref_params if objective.needs_reference
                                else None, run.data.eval_batch_size, make_mesh(run.mesh))
      result.update({"data": report.summary(), **evaluate(params)})
    if kind == "policy" and run.data.source == "synthetic":
      result.update(_synthetic_samples(run, config, params, ref_params))
    if prompt_eval:
      result.update(prompt_eval.metrics(config, params, ref_params, max_new_tokens,
                                        temperature, seed, batch_size, samples_output))
  return result


def _synthetic_samples(run, config, params, ref_params) -> dict:
  """Gold reward and KL of samples on held-out synthetic prompts."""
  from jaxalign.eval import sample_and_score
  synthetic = setup.synthetic_task(run)
  prompts = synthetic.prompt_rows(run.data.num_eval, seed=99)
  batch = prompts.batch(np.arange(len(prompts)), prompts.max_length)
  return sample_and_score(config, params, ref_params, batch.tokens, batch.attention_mask,
                          jax.random.PRNGKey(run.seed),
                          max_new_tokens=synthetic.config.max_response_length,
                          eos_id=config.eos_token_id, gold_reward=synthetic.gold_reward)
