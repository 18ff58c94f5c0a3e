"""Arguments and handlers of ``jaxalign eval``, ``sample`` and ``export`` (imports nothing
heavy until a command runs)."""

from __future__ import annotations

import json


def _sampling_args(parser, max_new_tokens: int) -> None:
  parser.add_argument("--prompts-file", help="JSONL/Parquet rows with a 'prompt' field (text or "
                      "chat messages), or a text file with one prompt per line")
  parser.add_argument("--chat", action="store_true", help="render each text prompt as a user "
                      "message with the tokenizer's chat template")
  parser.add_argument("--max-new-tokens", type=int, default=max_new_tokens,
                      help="default: " + (str(max_new_tokens) if max_new_tokens else
                                          "64, the synthetic task's response length for it"))
  parser.add_argument("--temperature", type=float, default=1.0)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--batch-size", type=int, default=32, help="prompts per sampler call")


def add_model_commands(commands) -> None:
  """Registers eval, sample and export on the ``jaxalign`` subparsers."""
  evaluate = commands.add_parser("eval", help="held-out metrics of a trained model, as its "
                                 "own run config defines them")
  target = evaluate.add_mutually_exclusive_group(required=True)
  target.add_argument("--model", help="a model folder from jaxalign train")
  target.add_argument("--frontier", nargs="+", metavar="[NAME=]DIR", help="several policies "
                      "on one reward-KL table against --reference (gold reward, RM score, KL, "
                      "entropy, length; --output FILE.csv or .json)")
  evaluate.add_argument("--reference", help="the reference policy (default: the run's "
                        "model.reference_from, else the policy it started from)")
  evaluate.add_argument("--beta", type=float, help="override the run's loss.beta")
  evaluate.add_argument("--config", help="run config (default: the model folder's "
                        "run_config.yaml)")
  evaluate.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE")
  evaluate.add_argument("--reward-model", help="scores samples of --prompts-file (default: "
                        "the run's online.reward_model)")
  evaluate.add_argument("--samples-output", help="write the --prompts-file samples (JSONL)")
  evaluate.add_argument("--output", help="also write the metrics to this JSON file")
  evaluate.add_argument("--best-of-n", metavar="N,N,...", help="--frontier: add best-of-n "
                        "against the reward model for these n (KL log n - (n - 1) / n)")
  _sampling_args(evaluate, None)

  sample = commands.add_parser("sample", help="sample responses from a trained policy")
  sample.add_argument("--model", required=True)
  sample.add_argument("--prompt", action="append", help="repeatable")
  sample.add_argument("--tokenizer", help="a folder with tokenizer.json, or 'bytes' (default: "
                      "the model folder's tokenizer)")
  sample.add_argument("--synthetic", action="store_true",
                      help="prompts are synthetic-task words like 't2 t17 t5'")
  sample.add_argument("--output", help="write one JSON object per prompt (JSONL) here")
  sample.add_argument("--top-k", type=int, default=0)
  sample.add_argument("--top-p", type=float, default=1.0)
  _sampling_args(sample, 32)

  export = commands.add_parser("export", help="write a model folder as a Hugging Face folder")
  export.add_argument("--model", required=True, help="a policy or reward model folder")
  export.add_argument("--hf", required=True, metavar="OUT", help="the Hugging Face folder")
  export.add_argument("--overwrite", action="store_true", help="write into a non-empty OUT")


def _print_json(value) -> None:
  print(json.dumps(value, indent=2, ensure_ascii=False))


def run_eval_command(args) -> int:
  if args.frontier:
    from jaxalign.cli.frontier_cmd import run_frontier
    if args.config or args.beta is not None or args.samples_output:
      raise ValueError("--frontier takes no --config, --beta or --samples-output")
    run_frontier(args.frontier, args.reference, args.reward_model, args.prompts_file,
                 args.overrides, args.best_of_n, args.max_new_tokens, args.temperature,
                 args.chat, args.seed, args.batch_size, args.output)
    return 0
  if args.best_of_n:
    raise ValueError("--best-of-n goes with --frontier")
  from jaxalign.cli.eval_cmd import run_eval
  result = run_eval(args.model, args.reference, args.config, args.overrides, args.beta,
                    prompts_file=args.prompts_file, reward_model=args.reward_model,
                    max_new_tokens=args.max_new_tokens or 64, temperature=args.temperature,
                    chat=args.chat, seed=args.seed, batch_size=args.batch_size,
                    samples_output=args.samples_output)
  if args.output:
    with open(args.output, "w") as f:
      json.dump(result, f, indent=2)
  _print_json(result)
  return 0


def run_sample_command(args) -> int:
  from jaxalign.cli.inspect_cmds import run_sample
  results = run_sample(args.model, args.prompt, args.tokenizer, args.synthetic,
                       args.max_new_tokens, args.temperature, args.top_k, args.top_p, args.seed,
                       prompts_file=args.prompts_file, chat=args.chat, output=args.output,
                       batch_size=args.batch_size)
  if args.output:
    print(f"wrote {len(results)} samples to {args.output}")
  else:
    _print_json(results)
  return 0


def run_export_command(args) -> int:
  from jaxalign.cli.export import run_export
  _print_json(run_export(args.model, args.hf, overwrite=args.overwrite))
  return 0
