"""Command line: ``sipo run``, ``sipo stage``, ``sipo report``.

A user mistake (bad config, bad data, missing file, incompatible run directory) ends with one line on stderr and
exit code 2; ``--debug`` shows the traceback instead. ``sipo run --strict`` exits with code 3 when the run finished
but the report's pipeline-health check warns (SIPO selected or trained nothing, or its points equal mod's).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import textwrap
from collections.abc import Sequence

from sipo.errors import SipoError

logger = logging.getLogger("sipo")

CONFIG_TEXT = """\
config: a YAML preset (see configs/) plus dotted key=value overrides, e.g.
  sipo run configs/smoke.yaml run_dir=runs/smoke dpo.beta=0.2 'methods=[sft,mod,sipo]' rounds=2
main keys: run_dir, seed, objectives, methods ({methods}), rounds, soup_mode,
  model.{{name_or_path,dtype,device,prompt_template,trust_remote_code}},
  data.{{source,path,split,revision,test_path,conflict_fraction,conflict_max_ties}},
  dpo.{{beta,lora.r,train.learning_rate,...}}, sample.grid.resolution, combine.rule, realign.{{alpha,beta}},
  eval.{{judge ({judges}),grid,decode.max_new_tokens}}.
  Unknown keys and bad values are rejected with the key named.
  The resolved config is saved to RUN_DIR/config.yaml. Changing a stage's settings re-runs that stage and the
  ones after it.
data: data.path is a JSONL/parquet/arrow file, a folder, a save_to_disk folder or a Hub id, or a mapping
  objective -> dataset (one dataset per objective); formats (TRL chosen/rejected, pairwise, per-response scores,
  HelpSteer2, PKU-SafeRLHF) with an example row each: docs/data.md
"""


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML preset, e.g. configs/demo.yaml")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")


def _help_texts() -> tuple[str, str]:
    """The stage list and the config summary of ``--help``, from the stage, method and judge registries."""
    from sipo.judges import JUDGES
    from sipo.methods import METHODS
    from sipo.stages.registry import stages_text

    return stages_text(), CONFIG_TEXT.format(methods=" ".join(METHODS), judges=" ".join(JUDGES))


def build_parser() -> argparse.ArgumentParser:
    stages_help, config_help = _help_texts()
    parser = argparse.ArgumentParser(
        prog="sipo",
        description="SIPO: self-improvement towards Pareto optimality for multi-objective alignment.\n\n"
                    + stages_help + "\n" + config_help,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and library logs")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{run,stage,report}")

    run = sub.add_parser(
        "run", help="run every stage, skipping finished ones",
        description="Run all stages of CONFIG in order. Finished stages whose settings did not change are "
                    "skipped, so re-running the same command resumes an interrupted run.\n\n"
                    + stages_help + "\n" + config_help,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_config_args(run)
    run.add_argument("--dry-run", action="store_true", help="validate the config and list the stages; write nothing")
    run.add_argument("--force", action="append", default=[], metavar="STAGE",
                     help="re-run this stage (id like r1/sample, or a name for every round) even if finished")
    run.add_argument("--strict", action="store_true",
                     help="exit with code 3 (after finishing the run) when the report's pipeline-health check "
                          "warns: a round without conflicting prompts or filter survivors, a re-alignment that "
                          "trained nothing, or sipo's points equal to mod's")
    run.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    stage = sub.add_parser(
        "stage", help="run one stage (its upstream stages must be finished)",
        description="Run one stage of CONFIG. NAME is a stage name (every round of it) or an id like r2/sample.\n\n"
                    + stages_help,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    stage.add_argument("name", help="stage name or id")
    _add_config_args(stage)
    stage.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    report = sub.add_parser("report", help="(re)write RUN_DIR/report/ from RUN_DIR/evaluate/scores.jsonl",
                            description="Write report.json, scores.jsonl, summary.csv, pareto.png and report.md "
                                        "under RUN_DIR/report/ from a finished evaluate stage.")
    report.add_argument("run_dir")
    report.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def _status_line(results: list[dict]) -> str:
    ran = [r["id"] for r in results if r["status"] == "ran"]
    skipped = [r["id"] for r in results if r["status"] == "skipped"]
    return f"{len(ran)} stage(s) ran, {len(skipped)} skipped"


def _run(args: argparse.Namespace) -> int:
    from sipo.config import load_config
    from sipo.pipeline import run_pipeline

    if args.command == "report":
        from sipo.stages.report import report_run_dir

        path = report_run_dir(args.run_dir)
        logger.info("report written to %s", path)
        return 0
    cfg = load_config(args.config, args.overrides)
    if args.command == "run":
        results = run_pipeline(cfg, force=args.force, dry_run=args.dry_run)
        if args.dry_run:
            sys.stdout.write("config is valid; stages: " + " ".join(r["id"] for r in results) + "\n")
            return 0
    else:
        results = run_pipeline(cfg, only=[args.name], force=[args.name])
    logger.info("%s; run directory: %s", _status_line(results), cfg.run_dir)
    if args.command == "run":
        return _health(cfg, strict=args.strict)
    return 0


def _health(cfg, *, strict: bool) -> int:
    """Repeat the report's pipeline-health warnings as the run's last lines; with ``--strict`` they fail it."""
    from sipo.artifacts import RunDir
    from sipo.report.health import STRICT_EXIT_CODE
    from sipo.stages.report import health_warnings_of

    warnings = health_warnings_of(RunDir(cfg.run_dir))
    for warning in warnings:
        logger.warning("pipeline health: %s", warning)
    if warnings:
        logger.warning("SIPO did nothing useful in this run: see the top of %s/report/report.md", cfg.run_dir)
        if strict:
            sys.stderr.write(f"sipo: strict: {len(warnings)} pipeline-health warning(s); exit code "
                             f"{STRICT_EXIT_CODE}\n")
            return STRICT_EXIT_CODE
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from sipo.logging_utils import setup_logging

    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(verbose=args.debug)
    if args.debug:
        os.environ.setdefault("SIPO_DEBUG", "1")
    try:
        return _run(args)
    except SipoError as exc:
        if args.debug:
            raise
        message = " ".join(str(exc).split())
        sys.stderr.write("sipo: error: " + textwrap.shorten(message, 2000) + "\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("sipo: interrupted; finished stages are kept, run the same command to resume\n")
        return 130
