"""Put the demo's seed table (``scripts/demo_seeds.py``) and one seed's figure into the README, between the
demo-results markers.

    python scripts/update_readme.py runs/demo-seeds [--figure-seed 10] [--config configs/demo-full.yaml]

The tables come from ``OUT/summary.md`` (everything before its per-seed diagnostics); the figure is the Pareto
fronts of one seed's run (``OUT/seed<k>/report/pareto.png``), labelled as such.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- demo-results:start -->", "<!-- demo-results:end -->"


def seed_block(summary_md: str) -> str:
    """The part of ``summary.md`` the README shows: from after its title to its per-seed diagnostics."""
    body = summary_md.split("## Diagnostics")[0]
    return body.split("\n", 1)[1].strip() if body.startswith("# ") else body.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("seeds_dir", type=Path, help="the --out folder of scripts/demo_seeds.py")
    parser.add_argument("--figure-seed", type=int, help="whose fronts to show (default: the first seed)")
    parser.add_argument("--config", default="configs/demo-full.yaml", help="the preset the seeds ran (named in the title)")
    args = parser.parse_args()
    from sipo.artifacts import atomic_write_text
    from sipo.report import read_report

    summary = json.loads((args.seeds_dir / "summary.json").read_text())
    seed = args.figure_seed if args.figure_seed is not None else summary["seeds"][0]
    report = read_report(args.seeds_dir / f"seed{seed}" / "report")
    shutil.copyfile(args.seeds_dir / f"seed{seed}" / "report" / "pareto.png", ROOT / "docs" / "demo_pareto.png")
    ref = ", ".join(f"{x:.3g}" for x in report["reference_point"])
    seeds = ", ".join(map(str, summary["seeds"]))
    block = [START, "", f"### Demo results (`{args.config}`, seeds {seeds}, judge `{report['judge']}`, reference "
             f"point ({ref}))", "", "From `python scripts/demo_seeds.py` (docs/benchmark.md is the protocol):", "",
             seed_block((args.seeds_dir / "summary.md").read_text()), "",
             f"![Pareto fronts of the demo, seed {seed} (all test prompts)](docs/demo_pareto.png)", "", END]
    readme = ROOT / "README.md"
    content = readme.read_text()
    content = re.sub(re.escape(START) + r".*?" + re.escape(END), lambda _: "\n".join(block), content, flags=re.S)
    atomic_write_text(readme, content)
    print(f"updated {readme}")


if __name__ == "__main__":
    main()
