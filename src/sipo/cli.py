"""Command line: ``sipo run``, ``sipo stage``, ``sipo report``, ``sipo generate``, ``sipo export``, ``sipo compare``,
``sipo config``.

Options may come anywhere on the line (``sipo run CFG --dry-run key=value``): positionals that argparse leaves
over are handed back to the sub-command's list argument (its overrides or prompts).

Exit codes (one line on stderr for each failure; ``--debug`` shows the traceback instead):

- 0: done (or nothing to do);
- 2: a user mistake: bad config or data, a missing or unloadable file, an incompatible run directory, or a run
  directory that another sipo run holds;
- 3: ``sipo run --strict`` only: the run finished but the report's pipeline-health check warns (SIPO selected or
  trained nothing, or its points equal mod's);
- 4: the environment refused: permission denied, read-only storage, no space left, an I/O error, out of memory;
- 130 / 143: interrupted by Ctrl-C / SIGTERM; finished stages are kept and the same command resumes.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
import textwrap
from collections.abc import Sequence

from sipo.errors import SipoError
from sipo.interrupt import Terminated, handling_stops

logger = logging.getLogger("sipo")

CONFIG_TEXT = """\
config: a YAML preset (see configs/) plus dotted key=value overrides, e.g.
  sipo run configs/smoke.yaml run_dir=runs/smoke dpo.beta=0.2 'methods=[sft,mod,sipo]' rounds=2
main keys: run_dir, seed, objectives, methods ({methods}), rounds, soup_mode ({soup_modes}),
  model.{{name_or_path,dtype,device,prompt_template,trust_remote_code}},
  data.{{source,path,split,revision,test_path,conflict_fraction,conflict_max_ties}},
  dpo.{{beta,lora.r,train.learning_rate,...}}, sample.grid.resolution, combine.rule ({combine_rules}),
  realign.{{alpha,beta}},
  eval.{{judge ({judges}),grid,decode.max_new_tokens}},
  train.report_to (tensorboard, wandb, ...). Every key, its value and what it does: sipo config PRESET.
  Unknown keys and bad values are rejected with the key named.
  The resolved config is saved to RUN_DIR/config.yaml. Changing a stage's settings or input files (data, model
  folder), forcing it, or deleting or editing one of its outputs re-runs that stage and the ones after it.
  One run writes a run directory at a time (lock file RUN_DIR/.sipo.lock).
data: data.path is a JSONL/parquet/arrow file, a folder, a save_to_disk folder or a Hub id, or a mapping
  objective -> dataset (one dataset per objective); formats (TRL chosen/rejected, pairwise, per-response scores,
  HelpSteer2, PKU-SafeRLHF) with an example row each: docs/data.md
exit codes: 0 done; 2 a user mistake (config, data, paths, a run directory in use); 3 --strict and the report's
  health check warns; 4 the environment refused (permission, read-only or full disk, I/O error, out of memory);
  130 Ctrl-C, 143 SIGTERM (finished stages kept).
"""

ENVIRONMENT_ERRNOS = frozenset(getattr(errno, name) for name in (
    "EACCES", "EPERM", "EROFS", "ENOSPC", "EDQUOT", "EIO", "EMFILE", "ENFILE", "ENOMEM", "EBUSY", "ETXTBSY", "EFBIG")
    if hasattr(errno, name))
"""OS errors that the machine causes (exit 4); the others (a missing file, a path under a file, ...) are mistakes
in the paths given (exit 2)."""

EXIT_USER, EXIT_ENVIRONMENT, EXIT_INTERRUPTED, EXIT_TERMINATED = 2, 4, 130, 143


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML preset, e.g. configs/demo.yaml")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")


def _help_texts() -> tuple[str, str]:
    """The stage list and the config summary of ``--help``, from the stage, method and judge registries and the
    config's enums."""
    from sipo.config import CombineRule, SoupMode
    from sipo.judges import JUDGES
    from sipo.methods import METHODS
    from sipo.stages.registry import stages_text

    return stages_text(), CONFIG_TEXT.format(methods=" ".join(METHODS), judges=" ".join(JUDGES),
                                             soup_modes=" ".join(SoupMode.values()),
                                             combine_rules=" ".join(CombineRule.values()))


def build_parser() -> argparse.ArgumentParser:
    stages_help, config_help = _help_texts()
    parser = argparse.ArgumentParser(
        prog="sipo",
        description="SIPO: self-improvement towards Pareto optimality for multi-objective alignment.\n\n"
                    + stages_help + "\n" + config_help,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and library logs")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True,
                                metavar="{run,stage,report,generate,export,compare,config}")

    run = sub.add_parser(
        "run", help="run every stage, skipping finished ones",
        description="Run all stages of CONFIG in order. Finished stages whose settings did not change are "
                    "skipped, so re-running the same command resumes an interrupted run.\n\n"
                    + stages_help + "\n" + config_help,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_config_args(run)
    run.set_defaults(rest="overrides")
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
    stage.set_defaults(rest="overrides")
    stage.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    report = sub.add_parser("report", help="(re)write RUN_DIR/report/ from RUN_DIR/evaluate/scores.jsonl",
                            description="Write report.json, scores.jsonl, summary.csv, pareto.png and report.md "
                                        "under RUN_DIR/report/ from a finished evaluate stage.")
    report.add_argument("run_dir")
    report.add_argument("--allow-stale", action="store_true",
                        help="write the report even if the evaluate stage (or one before it) is not finished, was "
                             "finished under other settings than config.yaml, or has an altered output; report.md "
                             "then says so")
    report.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    from sipo.cli_commands import add_commands

    add_commands(sub)
    return parser


def _version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("sipo")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        from sipo import __version__

        return __version__


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse ``argv`` with options allowed anywhere: argparse stops filling a ``nargs="*"`` positional at the first
    option, so the positionals after it come back as extras; they are appended to the sub-command's list argument
    (named by its ``rest`` default). Anything else left over (an unknown option) is the usual argparse error."""
    args, extras = parser.parse_known_args(argv)
    rest = getattr(args, "rest", None)
    stray = [e for e in extras if e.startswith("-") or rest is None]
    if stray:
        parser.error("unrecognized arguments: " + " ".join(stray))
    if extras:
        setattr(args, rest, [*(getattr(args, rest) or []), *extras])
    return args


def _status_line(results: list[dict]) -> str:
    ran = [r["id"] for r in results if r["status"] == "ran"]
    skipped = [r["id"] for r in results if r["status"] == "skipped"]
    return f"{len(ran)} stage(s) ran, {len(skipped)} skipped"


def _run(args: argparse.Namespace) -> int:
    from sipo.configure import load_config
    from sipo.pipeline import run_pipeline

    if getattr(args, "handler", None) is not None:
        return args.handler(args)
    if args.command == "report":
        from sipo.api import rebuild_report

        path = rebuild_report(args.run_dir, allow_stale=args.allow_stale)
        logger.info("report written to %s", path)
        return 0
    cfg = load_config(args.config, args.overrides)
    if args.command == "run" and args.dry_run:
        results = run_pipeline(cfg, force=args.force, dry_run=True)
        sys.stdout.write("config is valid; stages: " + " ".join(r["id"] for r in results) + "\n")
        return 0
    from sipo.tracking import run_log

    with run_log(cfg.run_dir):  # RUN_DIR/run.log gets what the console shows
        return _run_stages(args, cfg)


def _run_stages(args: argparse.Namespace, cfg) -> int:
    from sipo.pipeline import run_pipeline

    if args.command == "run":
        results = run_pipeline(cfg, force=args.force)
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


def os_error_line(exc: OSError) -> str:
    """One line for an operating-system error, naming the path(s) it concerns."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    paths = [p for p in (exc.filename, exc.filename2) if p is not None]
    where = " -> ".join(str(p) for p in paths)
    return f"{where}: {reason}" if where else reason


def _model_file_error(exc: BaseException) -> tuple[str, int] | None:
    """safetensors' errors (raised from Rust, not OSError): an unreadable or unwritable weights file."""
    if type(exc).__name__ != "SafetensorError":
        return None
    import re

    text = " ".join(str(exc).split())
    code = re.search(r"(?:code: |os error )(\d+)", text)  # the errno, in either of safetensors' formats
    environment = (code is not None and int(code.group(1)) in ENVIRONMENT_ERRNOS) or any(
        s in text for s in ("No space", "StorageFull", "Permission", "Read-only", "File too large"))
    return f"cannot read or write a safetensors weights file ({text})", EXIT_ENVIRONMENT if environment else EXIT_USER


def _resume_hint(args: argparse.Namespace) -> str:
    """What an interrupted command leaves: a run keeps its finished stages; the other commands run no stage."""
    if args.command in ("run", "stage"):
        return "; finished stages are kept, run the same command to resume"
    return ""


def _fail(message: str, code: int) -> int:
    message = " ".join(message.split())
    sys.stderr.write("sipo: error: " + textwrap.shorten(message, 2000) + "\n")
    return code


def main(argv: Sequence[str] | None = None) -> int:
    from sipo.logging_utils import setup_logging

    parser = build_parser()
    args = parse_args(parser, argv)
    setup_logging(verbose=args.debug)
    if args.debug:
        os.environ.setdefault("SIPO_DEBUG", "1")
    try:
        with handling_stops():
            return _run(args)
    except SipoError as exc:
        if args.debug:
            raise
        return _fail(str(exc), EXIT_USER)
    except OSError as exc:
        if args.debug:
            raise
        code = EXIT_ENVIRONMENT if exc.errno in ENVIRONMENT_ERRNOS else EXIT_USER
        return _fail(os_error_line(exc), code)
    except MemoryError:
        if args.debug:
            raise
        return _fail("out of memory (lower the batch sizes or use a smaller model)", EXIT_ENVIRONMENT)
    except KeyboardInterrupt:
        sys.stderr.write("sipo: interrupted" + _resume_hint(args) + "\n")
        return EXIT_INTERRUPTED
    except Terminated:
        sys.stderr.write("sipo: terminated (SIGTERM)" + _resume_hint(args) + "\n")
        return EXIT_TERMINATED
    except Exception as exc:
        known = _model_file_error(exc)
        if known is None and type(exc).__name__ == "OutOfMemoryError":  # torch.OutOfMemoryError (a RuntimeError)
            known = ("out of memory on the accelerator (lower the batch sizes or use a smaller model)",
                     EXIT_ENVIRONMENT)
        if known is None or args.debug:
            raise
        return _fail(*known)
