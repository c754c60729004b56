"""Put a finished demo run's table and figure into the README (between the demo-results markers).

    python scripts/update_readme.py runs/demo [--seeds runs/demo-seeds/summary.md]
"""

from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- demo-results:start -->", "<!-- demo-results:end -->"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--seeds", type=Path, help="summary.md written by scripts/demo_seeds.py")
    args = parser.parse_args()
    from sipo.report import markdown_table, read_report

    report = read_report(args.run_dir / "report")
    figure = ROOT / "docs" / "demo_pareto.png"
    shutil.copyfile(args.run_dir / "report" / "pareto.png", figure)
    ref = ", ".join(f"{x:.3g}" for x in report["reference_point"])
    block = [START, "", f"### Demo results (`configs/demo.yaml`, seed {report.get('seed', 0)}, judge "
             f"`{report['judge']}`, reference point ({ref}))", "", markdown_table(report), "",
             "![Pareto fronts of the demo](docs/demo_pareto.png)", ""]
    if args.seeds and args.seeds.is_file():
        text = args.seeds.read_text()
        table = text.split("## Diagnostics")[0].split("\n", 2)[2].strip()
        block += ["Over seeds (`python scripts/demo_seeds.py`):", "", table, ""]
    block.append(END)
    readme = ROOT / "README.md"
    content = readme.read_text()
    content = re.sub(re.escape(START) + r".*?" + re.escape(END), "\n".join(block), content, flags=re.S)
    readme.write_text(content)
    print(f"updated {readme}")


if __name__ == "__main__":
    main()
