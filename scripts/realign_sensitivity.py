"""How the re-alignment rate moves the *validation* front: a selection tool that never shows a test number.

    python scripts/realign_sensitivity.py [--config configs/demo.yaml] [--seeds 10] \
        [--multipliers 0.001 0.01 0.1 1.0] [--jobs 2] [--out runs/realign-sensitivity] [key=value ...]

Per seed S:

1. ``OUT/seed<S>/base``: an ordinary ``sipo run CONFIG seed=S methods=[mod,dpo_soups,sipo,sipo_oracle_filter,nll_control]``
   (the pipeline plans whatever these need: SFT, round-1 DPO, the self-improvement round); finished stages are
   skipped, so a finished base is reused.
2. For each multiplier m: the finished base run folder is copied (``shutil.copytree``, no symlinks) to
   ``OUT/seed<S>/rate<m>`` and ``sipo run`` runs there with ``realign.train.learning_rate = m x
   dpo.train.learning_rate``. Only the stages that read that setting re-run (re-alignment, the ablation and the
   control that train with re-alignment's settings, evaluate and report); the script checks that every other
   stage kept its base manifest and records any that did not under ``upstream_rerun``. The copy trains and
   decodes on its own ``sft/model``: every stage loads the base model from its run folder, never from the path an
   adapter's ``adapter_config.json`` names (that path, the base run's, is only metadata for export).

Writes ``OUT/sensitivity.json`` and ``OUT/sensitivity.md``: per seed and rate the validation hypervolume (the run's
judge on the validation prompts, ``report.json["validation"]``) of mod, sipo, sipo_oracle_filter and nll_control,
and sipo_oracle_filter − mod. Test numbers are deliberately not read. ``--jobs N`` runs N seeds at once, each with
one torch thread. Needs validation prompts (``data.validation_fraction`` > 0) and ``eval.validation`` on.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

METHODS = ("mod", "dpo_soups", "sipo", "sipo_oracle_filter", "nll_control")
DEFAULT_MULTIPLIERS = (0.001, 0.01, 0.1, 1.0)
RERUN_STAGES = ("sipo_no_rewrite", "sipo_no_filter", "sipo_oracle_filter", "nll_control", "evaluate", "report")
"""Stages that may re-run after a change of ``realign.train`` (besides every round's realign and later rounds)."""


def rate_name(multiplier: float) -> str:
    return f"rate{multiplier:g}"


def sipo_command(config: str, run_dir: Path, seed: int, overrides: list[str]) -> list[str]:
    return [sys.executable, "-m", "sipo", "run", config, f"run_dir={run_dir}", f"seed={seed}",
            f"methods=[{','.join(METHODS)}]", *overrides]


def may_rerun(stage_id: str) -> bool:
    """Whether a stage may re-run when only the re-alignment rate changed."""
    if stage_id in RERUN_STAGES or stage_id.endswith("/realign"):
        return True
    head = stage_id.split("/")[0]
    return head.startswith("r") and head[1:].isdigit() and int(head[1:]) >= 2  # later rounds read round 1's adapters


def manifests(run_dir: Path) -> dict[str, dict]:
    """Stage id -> its manifest (fingerprint and finish time identify the run that wrote it)."""
    out = {}
    for path in run_dir.rglob("manifest.json"):
        stage_id = path.parent.relative_to(run_dir).as_posix()
        manifest = json.loads(path.read_text())
        out[stage_id] = {k: manifest.get(k) for k in ("fingerprint", "finished_at")}
    return out


def upstream_reruns(base: dict[str, dict], copy: dict[str, dict]) -> list[str]:
    """Stages that re-ran in the copy although they should not have (or that the copy lost)."""
    return sorted(s for s, m in base.items() if not may_rerun(s) and copy.get(s) != m)


def copy_run(base: Path, target: Path) -> None:
    """A copy of the finished base run (once: an existing copy is resumed, never overwritten)."""
    if target.exists():
        return
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(base, partial, symlinks=False)
    partial.rename(target)


TEST_HYPERVOLUME_LINE = re.compile(r"report: \S+\s+hypervolume ")


def without_test_numbers(line: str) -> str:
    """A ``sipo run`` console line, with the report stage's test hypervolumes blanked: the sweep chooses on
    validation and must not show test numbers to whoever reads its console."""
    if TEST_HYPERVOLUME_LINE.search(line):
        return TEST_HYPERVOLUME_LINE.split(line)[0] + "report: (test hypervolume hidden by the sweep)\n"
    return line


def run(cmd: list[str], env: dict[str, str]) -> None:
    print("+", " ".join(cmd), flush=True)
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        for line in proc.stdout:
            sys.stdout.write(without_test_numbers(line))
            sys.stdout.flush()
    if proc.returncode != 0:
        raise SystemExit(f"failed with exit code {proc.returncode}: {' '.join(cmd)}")


def run_seed(config: str, out: Path, seed: int, rates: dict[float, float], overrides: list[str],
             env: dict[str, str]) -> dict[str, list[str]]:
    """The base run, then every rate; returns the unexpected upstream re-runs per rate."""
    base = out / f"seed{seed}" / "base"
    run(sipo_command(config, base, seed, overrides), env)
    base_manifests = manifests(base)
    reruns = {}
    for multiplier, rate in rates.items():
        target = out / f"seed{seed}" / rate_name(multiplier)
        copy_run(base, target)
        run(sipo_command(config, target, seed, [*overrides, f"realign.train.learning_rate={rate!r}"]), env)
        reruns[rate_name(multiplier)] = upstream_reruns(base_manifests, manifests(target))
        if reruns[rate_name(multiplier)]:
            print(f"WARNING seed {seed} {rate_name(multiplier)}: upstream stages re-ran: "
                  f"{reruns[rate_name(multiplier)]}", flush=True)
    return reruns


def validation_hypervolumes(run_dir: Path) -> dict[str, float] | None:
    """Method -> validation hypervolume of a finished run (None without a validation front). Reads nothing else
    of the report."""
    path = run_dir / "report" / "report.json"
    if not path.is_file():
        return None
    validation = json.loads(path.read_text()).get("validation")
    if not validation:
        return None
    return {m: validation["methods"][m]["hypervolume"] for m in METHODS if m in validation["methods"]}


def table(front: dict[int, dict[str, dict[str, float] | None]], rates: dict[float, float], config_rate: float,
          dpo_rate: float) -> str:
    """The markdown table: one row per seed and rate (validation hypervolumes only)."""
    lines = ["# Re-alignment rate sensitivity (validation front)", "",
             f"Validation hypervolume (the run's judge on the validation prompts) per seed and re-alignment rate, "
             f"as a multiple of round 1's rate (dpo.train.learning_rate = {dpo_rate:g}; the config's own "
             f"re-alignment rate is {config_rate:g}). Test numbers are not shown: this table chooses settings.", "",
             "| seed | rate (× round 1) | realign lr | " + " | ".join(METHODS) + " | oracle − mod |",
             "|---|---:|---:|" + "---:|" * (len(METHODS) + 1)]
    for seed, by_rate in front.items():
        for multiplier, rate in rates.items():
            hvs = by_rate.get(rate_name(multiplier))
            if hvs is None:
                cells = ["–"] * (len(METHODS) + 1)
            else:
                cells = [f"{hvs[m]:.4f}" if m in hvs else "–" for m in METHODS]
                both = "sipo_oracle_filter" in hvs and "mod" in hvs
                cells.append(f"{hvs['sipo_oracle_filter'] - hvs['mod']:+.4f}" if both else "–")
            lines.append(f"| {seed} | {multiplier:g} | {rate:.3g} | " + " | ".join(cells) + " |")
    if len(front) > 1:
        from sipo.stats import t_interval

        lines += ["", "Mean over seeds [95 % t-interval] (seeds where the method ran).", "",
                  "| rate (× round 1) | " + " | ".join(METHODS) + " | oracle − mod |",
                  "|---:|" + "---:|" * (len(METHODS) + 1)]
        for multiplier in rates:
            runs = [by_rate.get(rate_name(multiplier)) or {} for by_rate in front.values()]
            columns = [[r[m] for r in runs if m in r] for m in METHODS]
            columns.append([r["sipo_oracle_filter"] - r["mod"] for r in runs
                            if "sipo_oracle_filter" in r and "mod" in r])
            cells = []
            for values in columns:
                if not values:
                    cells.append("–")
                    continue
                iv = t_interval(values)
                cells.append(f"{iv.mean:.4f}" + ("" if iv.low is None else f" [{iv.low:.4f}, {iv.high:.4f}]"))
            lines.append(f"| {multiplier:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[10])
    parser.add_argument("--multipliers", type=float, nargs="+", default=list(DEFAULT_MULTIPLIERS),
                        help="re-alignment rates as multiples of dpo.train.learning_rate")
    parser.add_argument("--out", type=Path, default=Path("runs/realign-sensitivity"))
    parser.add_argument("--jobs", type=int, default=2, help="seeds run at once, one torch thread each (default 2)")
    parser.add_argument("--summarise-only", action="store_true", help="tabulate finished runs without running")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    from sipo.artifacts import atomic_write_text
    from sipo.configure import load_config

    cfg = load_config(args.config, [f"run_dir={args.out / 'unused'}", *args.overrides])
    if cfg.data.validation_fraction <= 0 or not cfg.eval.validation:
        raise SystemExit("needs validation prompts: data.validation_fraction > 0 and eval.validation true")
    dpo_rate = cfg.dpo.train.learning_rate
    rates = {m: m * dpo_rate for m in args.multipliers}
    reruns: dict[int, dict[str, list[str]]] = {}
    if not args.summarise_only:
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            futures = {s: pool.submit(run_seed, args.config, args.out, s, rates, args.overrides, env)
                       for s in args.seeds}
            reruns = {s: f.result() for s, f in futures.items()}
    front = {s: {rate_name(m): validation_hypervolumes(args.out / f"seed{s}" / rate_name(m)) for m in rates}
             for s in args.seeds}
    summary = {"config": args.config, "overrides": args.overrides, "dpo_learning_rate": dpo_rate,
               "config_realign_learning_rate": cfg.realign.train.learning_rate,
               "rates": {rate_name(m): r for m, r in rates.items()}, "validation_hypervolume": front,
               "upstream_rerun": reruns}
    markdown = table(front, rates, cfg.realign.train.learning_rate, dpo_rate)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "sensitivity.json", json.dumps(summary, indent=1) + "\n")
    atomic_write_text(args.out / "sensitivity.md", markdown)
    print(markdown)


if __name__ == "__main__":
    main()
