"""The sub-commands that use a finished run or look at the config: ``generate``, ``export``, ``compare``,
``config``. Each is thin wiring over its module (:mod:`sipo.api`, :mod:`sipo.export`, :mod:`sipo.compare`,
:mod:`sipo.config_help`); :func:`add_commands` registers them on ``sipo``'s parser.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from typing import Any

from sipo.errors import DataError
from sipo.methods import METHODS, exportable, methods_help, with_rounds

logger = logging.getLogger("sipo")

_HIDDEN_DEBUG = {"action": "store_true", "default": argparse.SUPPRESS, "help": argparse.SUPPRESS}
ALLOW_STALE_HELP = ("use the run even if a stage it reads is not finished, was finished under other settings than "
                    "its config.yaml, or has an altered output (refused otherwise); the output then says so")


def add_commands(sub) -> None:
    _ROUND_HELP = f"the round of {' or '.join(with_rounds())} (default: the last)"
    generate = sub.add_parser(
        "generate", help="decode prompts with a finished run at any weights",
        description="Decode prompts with a finished run's models at the weights you choose, exactly as the "
                    "evaluate stage decodes (the run's config.yaml gives the model, template and eval.decode "
                    "settings). Prints one JSON line per prompt: prompt_id, prompt, method, round, weights, "
                    "response.\n\nexamples:\n"
                    "  sipo generate runs/demo --weights correctness=0.3,verbosity=0.7 'Tell me about Zarnia.'\n"
                    "  sipo generate runs/demo --weights 0.5,0.5 --method dpo_soups --input prompts.jsonl\n\n"
                    f"methods: {methods_help(METHODS.names())}. Default: sipo.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    generate.add_argument("run_dir", help="a finished run directory (holds config.yaml)")
    generate.add_argument("prompts", nargs="*", metavar="PROMPT", help="prompt texts (or use --input)")
    generate.add_argument("--weights", help="one weight per objective summing to 1: name=w,name=w or w,w "
                                            "(objective order); not needed for sft")
    generate.add_argument("--method", default="sipo", help=f"{', '.join(METHODS)} (default sipo)")
    generate.add_argument("--round", type=int, default=None, help=_ROUND_HELP)
    generate.add_argument("--input", metavar="FILE.jsonl",
                          help="prompts, one JSON object per line with a 'prompt' (a string, or a list of "
                               "{role, content} messages ending with a user turn) and an optional 'prompt_id'")
    generate.add_argument("--max-new-tokens", type=int, default=None, help="default: the run's eval.decode")
    generate.add_argument("--device", default=None, help="cpu or cuda (default: the run's model.device)")
    generate.add_argument("--allow-stale", action="store_true", help=ALLOW_STALE_HELP)
    generate.add_argument("--debug", **_HIDDEN_DEBUG)
    generate.set_defaults(handler=run_generate, rest="prompts")

    export = sub.add_parser(
        "export", help="write one point of a run as a PEFT adapter (or a merged model)",
        description="Write the model of a method at a weight vector as a plain PEFT LoRA adapter folder (with "
                    "the tokenizer and a model card README.md naming the run, the weights and the method's front); "
                    "with --merge, a merged safetensors model plain transformers loads (the adapter goes to "
                    "OUT/adapter/).\n\n"
                    f"methods: {methods_help(exportable())}; an export of a method decoded with MOD is the soup of "
                    "the adapters that MOD mixes, which a single model approximates (the model card says so). "
                    "Default: sipo when the run has it, else dpo_soups.\n\nexample:\n"
                    "  sipo export runs/demo --weights correctness=0.3,verbosity=0.7 --out exports/w03 --merge",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    export.add_argument("run_dir", help="a finished run directory")
    export.add_argument("--weights", required=True, help="name=w,name=w or w,w (objective order), summing to 1")
    export.add_argument("--method", default=None, help=", ".join(exportable()))
    export.add_argument("--round", type=int, default=None, help=_ROUND_HELP)
    export.add_argument("--out", required=True, help="a new (or empty) folder")
    export.add_argument("--merge", action="store_true", help="also merge the adapter into the base weights")
    export.add_argument("--allow-stale", action="store_true", help=ALLOW_STALE_HELP)
    export.add_argument("--debug", **_HIDDEN_DEBUG)
    export.set_defaults(handler=run_export)

    compare = sub.add_parser(
        "compare", help="several runs' methods on one reference point: one table, one figure",
        description="Put the methods of several finished runs on one reference point: every hypervolume and front "
                    "is recomputed against it, and OUT/compare.md (the table), OUT/compare.png (one colour per "
                    "method, one line style per run) and OUT/compare.json are written. The runs must share their "
                    "objectives and judge.\n\nexample:\n"
                    "  sipo compare runs/seed0 runs/seed1 --out runs/compare --reference-point 0,0",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    compare.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="finished run directories (two or more)")
    compare.add_argument("--out", default="compare", help="output folder (default ./compare)")
    compare.add_argument("--reference-point", default=None,
                         help="one value per objective, e.g. 0,0 (default: the worst mean score over every run's "
                              "points minus a margin)")
    compare.add_argument("--allow-stale", action="store_true", help=ALLOW_STALE_HELP)
    compare.add_argument("--debug", **_HIDDEN_DEBUG)
    compare.set_defaults(handler=run_compare, rest="run_dirs")

    config = sub.add_parser(
        "config", help="print every config key with its value and a one-line description",
        description="Print every config key of PRESET (with key=value overrides applied; without a preset, the "
                    "built-in defaults) as 'key: value  # description', with the built-in default where the preset "
                    "changes it. Generated from the config tree, so it lists exactly the keys that exist.\n\n"
                    "example:\n  sipo config configs/demo.yaml | grep dpo.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    config.add_argument("preset", nargs="?", help="a YAML preset, e.g. configs/demo.yaml")
    config.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    config.add_argument("--debug", **_HIDDEN_DEBUG)
    config.set_defaults(handler=run_config, rest="overrides")


def _read_prompts(path: str) -> list[tuple[str, Any]]:
    """(prompt_id, prompt) of every row of a ``--input`` file: ``prompt`` is a string or a list of messages."""
    from sipo import conversation
    from sipo.records import iter_json_lines

    rows = []
    for line, obj in iter_json_lines(path):
        prompt = obj.get("prompt")
        try:
            conversation.as_prompt(prompt, "'prompt'")
        except ValueError as exc:
            raise DataError(f"{exc} (a string, or a list of {{role, content}} messages ending with a user turn)",
                            path=path, line=line) from None
        rows.append((str(obj.get("prompt_id", line)), prompt))
    if not rows:
        raise DataError("no prompts", path=path)
    return rows


def run_generate(args: argparse.Namespace) -> int:
    from sipo.api import load
    from sipo.errors import ConfigError

    items = [(str(i), p) for i, p in enumerate(args.prompts, start=1)]
    if args.input:
        items += _read_prompts(args.input)
    if not items:
        raise ConfigError("give at least one PROMPT or --input FILE.jsonl")
    run = load(args.run_dir, device=args.device, allow_stale=args.allow_stale)
    responses = run.generate([p for _, p in items], args.weights, method=args.method, round=args.round,
                             max_new_tokens=args.max_new_tokens)
    job = run.point(args.method, args.weights, args.round)
    stale = {"stale": "; ".join(run.stale)} if run.stale else {}
    for (prompt_id, prompt), response in zip(items, responses):
        sys.stdout.write(json.dumps({"prompt_id": prompt_id, "prompt": prompt, "method": job.method,
                                     "round": job.round, "weights": job.weights, "response": response, **stale},
                                    ensure_ascii=False) + "\n")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from sipo.export import export_point

    out = export_point(args.run_dir, args.weights, args.out, method=args.method, round_=args.round,
                       merge=args.merge, allow_stale=args.allow_stale)
    logger.info("exported to %s", out)
    return 0


def run_config(args: argparse.Namespace) -> int:
    from sipo.config_help import config_lines
    from sipo.configure import load_config

    preset, overrides = args.preset, list(args.overrides)
    if preset is not None and "=" in preset:
        preset, overrides = None, [preset, *overrides]
    cfg = load_config(preset, overrides) if preset is not None or overrides else None
    sys.stdout.write("\n".join(config_lines(cfg)) + "\n")
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from sipo.compare import compare_runs
    from sipo.errors import ConfigError

    reference = None
    if args.reference_point is not None:
        try:
            reference = [float(x) for x in args.reference_point.split(",")]
        except ValueError:
            raise ConfigError(f"--reference-point: '{args.reference_point}' is not numbers separated by commas") \
                from None
        if not all(math.isfinite(x) for x in reference):
            raise ConfigError(f"--reference-point: '{args.reference_point}' holds a value that is not a finite "
                              "number")
    combined = compare_runs(args.run_dirs, args.out, reference, allow_stale=args.allow_stale)
    logger.info("compared %d runs (%d methods) -> %s/compare.md", len(combined["runs"]), len(combined["methods"]),
                args.out)
    return 0
