"""Run the synthetic demo for several seeds and summarise it as docs/benchmark.md prescribes: each method's mean
hypervolume with a 95 % t-interval over seeds, and the paired differences SIPO − X with their intervals, on every
test set (all prompts; benchmark v2 also in-distribution and transfer), plus per-seed diagnostics.

Before any test number the summary states the validity conditions (sipo.report.validity) per seed, from each run's
validation front and round-1 reviews, and the oracle bound over seeds by the interval rule (paired
sipo_oracle_filter − MOD on validation, 95 % t-interval above 0); after the hypervolumes, SIPO's share of the
oracle's gain, (sipo − mod) / (sipo_oracle_filter − mod), with its mean and 95 % t-interval over seeds per test set.

    python scripts/demo_seeds.py [--config configs/demo-full.yaml] [--seeds 40 41 42 43 44] [--jobs 2] [key=value ...]

Each seed is an ordinary ``sipo run CONFIG run_dir=OUT/seed<k> seed=<k>`` (finished stages are skipped, so an
interrupted sweep resumes). Writes ``OUT/summary.json`` and ``OUT/summary.md``. With ``--jobs N`` N seeds run at
once, each with one torch thread (on a small CPU this beats N runs that each want every core). The default seeds
are benchmark v3.1's final seeds (40-44), which no setting was tuned on (v3's were 20-24, v2's 10-14).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_SEEDS = [40, 41, 42, 43, 44]
TARGET = "sipo"
VERDICT = {"above": "SIPO better", "below": "SIPO worse", "overlaps": "no difference shown"}


def seed_command(config: str, out: Path, seed: int, overrides: list[str]) -> list[str]:
    return [sys.executable, "-m", "sipo", "run", config, f"run_dir={out / f'seed{seed}'}", f"seed={seed}", *overrides]


def run_seeds(config: str, out: Path, seeds: list[int], overrides: list[str], jobs: int) -> None:
    """Run every seed (``jobs`` at a time). Exits if a run fails."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1") if jobs > 1 else None
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


def environments(run_dir: Path) -> list[dict]:
    """The distinct ``environment`` records (CPU capability, threads, device) of a run's manifests."""
    seen = []
    for m in sorted(run_dir.rglob("manifest.json")):
        env = json.loads(m.read_text()).get("environment")
        if env and env not in seen:
            seen.append(env)
    return seen


def _fmt(interval) -> str:
    if interval.low is None:
        return f"{interval.mean:.4f}"
    return f"{interval.mean:.4f} [{interval.low:.4f}, {interval.high:.4f}]"


def set_keys(diags: dict[int, dict]) -> list[tuple[str, str]]:
    """(diagnostics key, column name): all prompts, then each test set the runs report."""
    keys = [("hypervolume", "all prompts")]
    for name in ("in_distribution", "transfer"):
        if all(f"hypervolume_{name}" in d for d in diags.values()):
            keys.append((f"hypervolume_{name}", name.replace("_", "-")))
    return keys


def read_reports(out: Path, seeds: list[int]) -> dict[int, dict]:
    """Each seed's ``report/report.json`` (an empty dict where there is none)."""
    reports = {}
    for s in seeds:
        path = out / f"seed{s}" / "report" / "report.json"
        reports[s] = json.loads(path.read_text()) if path.is_file() else {}
    return reports


def _validation_hypervolumes(report: dict) -> dict | None:
    validation = report.get("validation")
    return {n: e["hypervolume"] for n, e in validation["methods"].items()} if validation else None


def _value_text(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, dict):
        return ", ".join(f"{k.replace('_share', '')} {_value_text(v)}" for k, v in value.items())
    return f"{value:.3f}" if isinstance(value, float) else str(value)


HOLDS = {True: "holds", False: "**fails**", None: "not checked"}


def validity_summary(reports: dict[int, dict], diags: dict[int, dict]) -> tuple[dict, list[str], list[str]]:
    """The validity conditions per seed and over seeds, and the oracle-gain share over seeds: (JSON, markdown of the
    conditions, markdown of the share). A report without ``validity`` (an older run) gets it computed from its
    validation front and the diagnostics' review skill."""
    from sipo.report.validity import (
        CONDITIONS,
        oracle_bound_over_seeds,
        shares_over_seeds,
        validity_conditions,
    )

    per_seed = {}
    for s, r in reports.items():
        per_seed[s] = r.get("validity") or validity_conditions(
            _validation_hypervolumes(r), r.get("reference_point") or [0.0, 0.0], diags.get(s, {}).get("review_skill"))
    bound = oracle_bound_over_seeds({s: _validation_hypervolumes(r) for s, r in reports.items()})
    shares = shares_over_seeds({s: r.get("oracle_gain_share") for s, r in reports.items()})
    conditions = ["## Validity conditions", "",
                  "Computed on validation prompts and training diagnostics only, before any test number: headroom "
                  "(best baseline's validation hypervolume / ideal, at most 0.85), the oracle bound "
                  "(sipo_oracle_filter − MOD on validation, above 0) and review skill (round-1 reviews: corrected "
                  "share at least 0.30, wrong-change share at most 0.30).", "",
                  "| seed | " + " | ".join(c.replace("_", " ") for c in CONDITIONS) + " |",
                  "|---|" + "---|" * len(CONDITIONS)]
    for s, v in per_seed.items():
        cells = [f"{_value_text(v[c]['value'])} {HOLDS[v[c]['holds']]}" if c in v else "–" for c in CONDITIONS]
        conditions.append(f"| {s} | " + " | ".join(cells) + " |")
    conditions += [""]
    if bound["mean"] is None:
        conditions.append(f"Oracle bound over seeds: not checked ({bound['reason']}).")
    else:
        conditions.append(f"Oracle bound over seeds (interval rule): sipo_oracle_filter − MOD on validation "
                          f"{bound['mean']:.4f} [{bound['low']:.4f}, {bound['high']:.4f}] over {bound['n']} seeds: "
                          f"{HOLDS[bound['holds']]}." + (f" {bound['reason']}" if bound["reason"] else ""))
    for s, v in per_seed.items():
        for c in CONDITIONS:
            if v.get(c, {}).get("holds") is False:
                conditions.append(f"- seed {s}: {v[c]['reason']}")
    share_lines = []
    if shares:
        share_lines = ["", "SIPO's share of the oracle's gain, (sipo − mod) / (sipo_oracle_filter − mod) in "
                       "hypervolume: mean over the seeds where it is defined [95 % t-interval]; null where the "
                       "oracle bound does not beat MOD.", "",
                       "| prompts | share | seeds | null on seeds |", "|---|---:|---:|---|"]
        for name, e in shares.items():
            text = "–" if e["mean"] is None else (f"{e['mean']:.3f}" if e["low"] is None else
                                                  f"{e['mean']:.3f} [{e['low']:.3f}, {e['high']:.3f}]")
            share_lines.append(f"| {name.replace('_', '-')} | {text} | {e['n']} | "
                               f"{', '.join(map(str, e['null_seeds'])) or '–'} |")
    summary = {"per_seed": per_seed, "oracle_bound_over_seeds": bound, "oracle_gain_share": shares}
    return summary, conditions, share_lines


def loop_lines(reports: dict[int, dict]) -> list[str]:
    """Per seed, from each report: the review probe on both entity sets and the self-improvement funnel (markdown
    rows; none where no report has them)."""
    lines: list[str] = []
    probes = {s: r["review_probe"] for s, r in reports.items() if r.get("review_probe")}
    if probes:
        lines += ["", "Review probe (the round-1 reviewer on MOD answers to training prompts; transfer: entities the "
                  "loop never sees): wrong facts corrected / changes wrong / missing facts added.", "",
                  "| seed | entities | reviews | corrected | wrong changes | added |", "|---|---|---:|---:|---:|---:|"]
        for s, probe in probes.items():
            for name, p in probe.items():
                lines.append(f"| {s} | {name.replace('_', '-')} | {p.get('reviews')} | "
                             f"{_value_text(p.get('corrected_share'))} of {p.get('wrong_facts')} | "
                             f"{_value_text(p.get('wrong_change_share'))} of {p.get('changes')} | "
                             f"{_value_text(p.get('added_share'))} of {p.get('missing')} |")
    funnels = {s: (r.get("pipeline") or {}).get("funnel") for s, r in reports.items()}
    funnels = {s: f for s, f in funnels.items() if f}
    if funnels:
        lines += ["", "Funnel per seed and round: conflicting prompts, candidates, rewrites kept, filter survivors, "
                  "re-alignment pairs.", "",
                  "| seed | round | conflicting prompts | candidates | rewrites kept | survivors | pairs |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for s, funnel in funnels.items():
            for e in funnel:
                lines.append(f"| {s} | {e['round']} | {e['conflicting_prompts']} | {e['candidates']} | "
                             f"{e['rewrites_kept']} of {e['rewrites']} | {e['filter_survivors']} | "
                             f"{e['realign_pairs']} |")
    return lines


def summarise(diags: dict[int, dict], seconds: dict[int, float], envs: dict[int, list[dict]],
              reports: dict[int, dict] | None = None, title: str = "Synthetic demo") -> tuple[dict, str]:
    """The summary (JSON) and its markdown: intervals over seeds and paired differences (docs/benchmark.md), and,
    with the seeds' ``reports``, the validity conditions and the oracle-gain share."""
    from sipo.stats import paired_differences, t_interval

    keys = set_keys(diags)
    methods = sorted({m for d in diags.values() for m in d.get("hypervolume", {})})
    stats: dict = {}
    for key, _ in keys:
        stats[key] = {}
        for m in methods:
            values = [d[key][m] for d in diags.values() if m in d.get(key, {})]
            if values:
                stats[key][m] = {**t_interval(values).as_dict(), "values": values}
    paired: dict = {}
    for key, _ in keys:
        by_seed = {s: d[key] for s, d in diags.items() if key in d}
        paired[key] = {m: {**iv.as_dict(), "values": diffs, "verdict": iv.excludes_zero()}
                       for m, (iv, diffs) in paired_differences(by_seed, TARGET).items()}
    steps = {m: sorted({d.get("training_steps", {}).get(m) for d in diags.values()} - {None}) for m in methods}

    from sipo.stats import Interval

    def iv(d: dict) -> Interval:
        return Interval(d["mean"], d["low"], d["high"], d["n"])

    capabilities = sorted({e.get("cpu_capability") for es in envs.values() for e in es} - {None})
    threads = sorted({e.get("torch_threads") for es in envs.values() for e in es} - {None})
    seeds = list(diags)
    validity, validity_lines, share_lines = validity_summary(reports, diags) if reports else ({}, [], [])
    lines = [f"# {title} over seeds", "",
             f"Seeds {', '.join(map(str, seeds))}; CPU capability {', '.join(capabilities) or 'unrecorded'}; "
             f"torch threads per run {', '.join(map(str, threads)) or 'unrecorded'}; seconds per seed (sum of the "
             "stages' manifests): " + ", ".join(f"{seconds[s]:.0f}" for s in seeds if s in seconds) + ".", "",
             *validity_lines, *([""] if validity_lines else []),
             "Hypervolume above (0, 0): mean over seeds [95 % t-interval]; training steps are the preference "
             "training's optimizer steps per seed (min–max).", "",
             "| method | training steps | " + " | ".join(col for _, col in keys) + " |",
             "|---|---:|" + "---:|" * len(keys)]
    first = keys[0][0]
    for m in sorted(stats[first], key=lambda m: -stats[first][m]["mean"]):
        s = steps.get(m) or []
        step_text = "–" if not s else (str(s[0]) if len(s) == 1 else f"{s[0]}–{s[-1]}")
        cells = [_fmt(iv(stats[key][m])) if m in stats[key] else "–" for key, _ in keys]
        lines.append(f"| {m} | {step_text} | " + " | ".join(cells) + " |")
    if paired[first]:
        lines += ["", f"Paired differences {TARGET} − X per seed: mean [95 % t-interval] and the protocol's verdict "
                  "(an interval entirely above 0: SIPO better; entirely below: SIPO worse).", "",
                  "| X | " + " | ".join(col for _, col in keys) + " |", "|---|" + "---|" * len(keys)]
        for m in sorted(paired[first], key=lambda m: paired[first][m]["mean"]):
            cells = []
            for key, _ in keys:
                d = paired[key].get(m)
                cells.append("–" if d is None else f"{_fmt(iv(d))} {VERDICT[d['verdict']]}")
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines += share_lines
    skills = {s: d["review_skill"] for s, d in diags.items() if d.get("review_skill")}
    if skills:
        lines += ["", "Review skill (round-1 reviews of the MOD candidates, against the ideal review): share of wrong "
                  "facts named and corrected / share of the review's changes that are wrong / share of missing "
                  "attributes it asks to add.", "",
                  "| seed | corrected | wrong changes | added |", "|---|---:|---:|---:|"]
        for s, k in skills.items():
            lines.append(f"| {s} | {k['corrected_share']} ({k['wrong_facts']} wrong facts) | "
                         f"{k['wrong_change_share']} ({k['changes']} changes) | {k['added_share']} |")
    lines += loop_lines(reports or {})
    lines += ["", "## Diagnostics per seed (oracle)", ""]
    for seed, d in diags.items():
        lines += [f"### seed {seed}", "", "```json", json.dumps(d, indent=1), "```", ""]
    summary = {"seeds": seeds, "hypervolume": stats, "paired_differences": paired, "diagnostics": diags,
               "seconds": seconds, "environments": envs}
    if validity:
        summary["validity"] = validity
    return summary, "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/demo-full.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=DEFAULT_SEEDS)
    parser.add_argument("--out", type=Path, default=Path("runs/demo-seeds"))
    parser.add_argument("--jobs", type=int, default=2, help="seeds run at once, one torch thread each (default 2)")
    parser.add_argument("--summarise-only", action="store_true", help="summarise finished runs without running")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    from sipo.artifacts import atomic_write_text
    from sipo.synthetic.diagnostics import run_diagnostics

    if not args.summarise_only:
        run_seeds(args.config, args.out, args.seeds, args.overrides, max(1, args.jobs))
    seconds = {s: stage_seconds(args.out / f"seed{s}") for s in args.seeds}
    envs = {s: environments(args.out / f"seed{s}") for s in args.seeds}
    diags = {s: run_diagnostics(args.out / f"seed{s}") for s in args.seeds}
    summary, markdown = summarise(diags, seconds, envs, read_reports(args.out, args.seeds),
                                  title=f"`{args.config}`")
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "summary.json", json.dumps(summary, indent=1) + "\n")
    atomic_write_text(args.out / "summary.md", markdown)
    print(markdown)


if __name__ == "__main__":
    main()
