"""Per-stage diagnostics of a finished synthetic-benchmark run, measured with the exact oracle.

They answer "why does (or doesn't) SIPO beat the baselines?": the conflict share of the data, the MOD candidates'
oracle scores per weight vector, how many rewrites the combine step keeps and whether they are truly better, the
filter's survival rate, and the selected responses' oracle scores against the original chosen and rejected ones.

    from sipo.synthetic.diagnostics import run_diagnostics
    diag = run_diagnostics("runs/demo")
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sipo.artifacts import RunDir
from sipo.config import weights_tag
from sipo.configure import load_config
from sipo.stages.combine import read_combined
from sipo.stages.filter import read_selected
from sipo.stages.report import round_review_skill
from sipo.stages.rewrite import read_rewrites
from sipo.stages.sample import read_candidates


def _mean(values: Sequence[float]) -> float | None:
    return round(statistics.fmean(values), 4) if values else None


def _mean_scores(scores: Sequence[dict[str, float]], objectives: Sequence[str]) -> dict[str, float | None]:
    return {o: _mean([s[o] for s in scores]) for o in objectives}


def compare(new: dict[str, float], old: dict[str, float], objectives: Sequence[str]) -> str:
    """``dominates``, ``dominated``, ``equal`` or ``trade-off`` (oracle scores of two responses)."""
    ge = all(new[o] >= old[o] for o in objectives)
    le = all(new[o] <= old[o] for o in objectives)
    if ge and le:
        return "equal"
    if ge:
        return "dominates"
    if le:
        return "dominated"
    return "trade-off"


def run_diagnostics(run_dir: str | Path, round_: int = 1) -> dict[str, Any]:
    """Oracle diagnostics of round ``round_`` of a finished run of the synthetic benchmark."""
    from sipo.synthetic.oracle import OracleJudge

    rd = RunDir(run_dir)
    cfg = load_config(rd.root / "config.yaml", [f"run_dir={run_dir}"])
    objectives = list(cfg.objectives)
    judge = OracleJudge(cfg)

    def oracle(prompts: list[str], responses: list[str]) -> list[dict[str, float]]:
        scores = judge.score(prompts, responses)
        return [{o: float(scores[o][i]) for o in objectives} for i in range(len(prompts))]

    out: dict[str, Any] = {}
    prepare = rd.read_manifest("prepare") or {}
    counts = prepare.get("counts", {})
    if counts.get("pairs"):
        out["conflict_share"] = round(counts["conflicting_pairs"] / counts["pairs"], 4)

    prefix = f"r{round_}"
    candidates = read_candidates(rd, round_)
    cand_scores = oracle([c.prompt for c in candidates], [c.response for c in candidates])
    by_weight: dict[str, list[dict[str, float]]] = {}
    for c, s in zip(candidates, cand_scores):
        by_weight.setdefault(weights_tag(c.weights), []).append(s)
    out["candidates_by_weight"] = {tag: _mean_scores(s, objectives) for tag, s in by_weight.items()}

    skill = round_review_skill(cfg, rd, round_)
    if skill is not None:
        out["review_skill"] = skill

    combined = read_combined(rd, round_)
    rewrites = read_rewrites(rd, round_)
    original = {c.candidate_id: c for c in candidates}
    paired = [(original[cid], rw) for cid, rw in rewrites.items() if cid in original]
    rw_scores = oracle([r.prompt for _, r in paired], [r.response for _, r in paired])
    orig_scores = oracle([o.prompt for o, _ in paired], [o.response for o, _ in paired])
    kept = {c.candidate.candidate_id for c in combined if c.replaced}
    verdicts: dict[str, dict[str, int]] = {"kept": {}, "discarded": {}}
    for (o, _rewrite), rs, os_ in zip(paired, rw_scores, orig_scores):
        group = "kept" if o.candidate_id in kept else "discarded"
        verdict = compare(rs, os_, objectives)
        verdicts[group][verdict] = verdicts[group].get(verdict, 0) + 1
    out["rewrite"] = {
        "rewrites": len(paired),
        "kept_by_combine": len(kept),
        "kept_share": round(len(kept) / max(1, len(paired)), 4),
        "oracle_vs_original": verdicts,
        "oracle_mean_rewrites": _mean_scores(rw_scores, objectives),
        "oracle_mean_originals": _mean_scores(orig_scores, objectives),
    }

    filter_manifest = rd.read_manifest(f"{prefix}/filter") or {}
    selected = read_selected(rd, round_)
    out["filter"] = {k: filter_manifest.get("counts", {}).get(k)
                     for k in ("prompts", "selected", "survival_rate", "surviving_candidates", "candidates")}
    if selected:
        prompts = [s.prompt for s in selected]
        sel = oracle(prompts, [s.response for s in selected])
        a = oracle(prompts, [s.response_a for s in selected])
        b = oracle(prompts, [s.response_b for s in selected])
        beats_both = sum(1 for x, y, z in zip(sel, a, b)
                         if compare(x, y, objectives) == "dominates" and compare(x, z, objectives) == "dominates")
        out["selected"] = {
            "oracle_mean_selected": _mean_scores(sel, objectives),
            "oracle_mean_original_a": _mean_scores(a, objectives),
            "oracle_mean_original_b": _mean_scores(b, objectives),
            "oracle_dominates_both_originals": round(beats_both / len(selected), 4),
        }
    report_path = rd.path("report", "report.json")
    if report_path.is_file():
        report = json.loads(report_path.read_text())
        out["hypervolume"] = {name: m["hypervolume"] for name, m in report["methods"].items()}
        for set_name, entry in (report.get("test_sets") or {}).items():
            out[f"hypervolume_{set_name}"] = {name: m["hypervolume"] for name, m in entry["methods"].items()}
        out["training_steps"] = {name: m["training_steps"] for name, m in report["methods"].items()
                                 if "training_steps" in m}
    return out
