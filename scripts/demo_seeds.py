"""Run the synthetic demo for several seeds and summarise hypervolumes (mean ± std) and per-stage diagnostics.

    python scripts/demo_seeds.py --seeds 0 1 2 --out runs/demo-seeds [--jobs 2] [key=value ...]

Each seed is an ordinary ``sipo run configs/demo.yaml run_dir=OUT/seed<k> seed=<k>`` (finished stages are
skipped, so an interrupted sweep resumes). Writes ``OUT/summary.json`` and ``OUT/summary.md``. With ``--jobs N``
N seeds run at once, each with one torch thread (on a small CPU this beats N runs that each want every core).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from sipo.report.build import format_hypervolume


def seed_command(config: str, out: Path, seed: int, overrides: list[str]) -> list[str]:
    return [sys.executable, "-m", "sipo", "run", config, f"run_dir={out / f'seed{seed}'}", f"seed={seed}", *overrides]


def run_seeds(config: str, out: Path, seeds: list[int], overrides: list[str], jobs: int) -> None:
    """Run every seed (``jobs`` at a time). Exits if a run fails."""
    env = dict(os.environ, OMP_NUM_THREADS="1") if jobs > 1 else None
    pending = list(seeds)
    running: dict[int, subprocess.Popen] = {}
    while pending or running:
        while pending and len(running) < jobs:
            seed = pending.pop(0)
            cmd = seed_command(config, out, seed, overrides)
            print("+", " ".join(cmd), flush=True)
            running[seed] = subprocess.Popen(cmd, env=env)
        for seed, proc in list(running.items()):
            if proc.poll() is not None:
                del running[seed]
                if proc.returncode != 0:
                    sys.exit(f"seed {seed} failed with exit code {proc.returncode}")
        time.sleep(1)


def stage_seconds(run_dir: Path) -> float:
    """Sum of the stages' own seconds (their manifests): the run's compute time, whether or not this call ran it."""
    return sum(json.loads(m.read_text()).get("seconds") or 0.0 for m in run_dir.rglob("manifest.json"))


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(diags: dict[int, dict], seconds: dict[int, float]) -> tuple[dict, str]:
    methods = sorted({m for d in diags.values() for m in d.get("hypervolume", {})})
    hv = {m: [d["hypervolume"][m] for d in diags.values() if m in d.get("hypervolume", {})] for m in methods}
    stats = {m: dict(zip(("mean", "std"), mean_std(v)), values=v) for m, v in hv.items()}
    lines = ["# Synthetic demo over seeds", "",
             f"Seeds: {', '.join(map(str, diags))}; seconds per seed (sum of the stages' manifests): "
             + ", ".join(f"{seconds[s]:.0f}" for s in diags if s in seconds), "",
             "| method | hypervolume (mean ± std) | per seed |", "|---|---:|---|"]
    for m in sorted(stats, key=lambda m: -stats[m]["mean"]):
        s = stats[m]
        per_seed = ", ".join(format_hypervolume(v) for v in s["values"])
        lines.append(f"| {m} | {format_hypervolume(s['mean'])} ± {format_hypervolume(s['std'])} | {per_seed} |")
    if "sipo" in stats:
        lines.append("")
        for base in ("mod", "dpo_soups"):
            if base in stats:
                gap = stats["sipo"]["mean"] - stats[base]["mean"]
                sd = max(stats["sipo"]["std"], stats[base]["std"])
                verdict = "beyond" if gap > sd else "within"
                lines.append(f"- sipo − {base}: {gap:+.4f} ({verdict} one standard deviation, {sd:.4f})")
    lines += ["", "## Diagnostics per seed (oracle)", ""]
    for seed, d in diags.items():
        lines += [f"### seed {seed}", "", "```json", json.dumps({k: v for k, v in d.items() if k != "hypervolume"},
                                                               indent=1), "```", ""]
    return {"hypervolume": stats, "diagnostics": diags, "seconds": seconds}, "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("runs/demo-seeds"))
    parser.add_argument("--jobs", type=int, default=1, help="seeds run at once (default 1)")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    from sipo.synthetic.diagnostics import run_diagnostics

    run_seeds(args.config, args.out, args.seeds, args.overrides, max(1, args.jobs))
    seconds = {s: stage_seconds(args.out / f"seed{s}") for s in args.seeds}
    diags = {s: run_diagnostics(args.out / f"seed{s}") for s in args.seeds}
    summary, markdown = summarise(diags, seconds)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    (args.out / "summary.md").write_text(markdown)
    print(markdown)


if __name__ == "__main__":
    main()
