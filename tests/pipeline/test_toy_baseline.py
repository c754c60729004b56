"""A new trained baseline from outside the package, in three definitions (its loss, its stage, its method), and
nothing else: the pipeline plans and trains it, evaluates and reports it, ``sipo.load`` generates with it and
``sipo export`` writes it, with no edit of any module of sipo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch.nn.functional as F

from sipo.config import weight_grid, weights_tag
from sipo.configure import load_config
from sipo.losses import LOSSES, LossBatch, LossDef, LossResult
from sipo.methods import GRID_WEIGHTS, METHODS, MethodDef, adapter_per_weight
from sipo.stage import StageContext, StageDef
from sipo.stages.model_calls import format_prompts, train_adapter
from sipo.stages.pairs import training_union
from sipo.stages.registry import STAGES

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

WEIGHT = "pair_weight"


# 1. The loss: DPO with a per-pair weight column (a pure function of the log-probs and the batch).
def weighted_dpo(batch: LossBatch) -> LossResult:
    pc, pr, rc, rr = batch.logps
    chosen, rejected = batch.beta * (pc - rc), batch.beta * (pr - rr)
    losses = -F.logsigmoid(chosen - rejected) * batch.inputs[WEIGHT][:, 0]
    return losses, chosen.detach(), rejected.detach(), {}


TOY_LOSS = LossDef("toy_weighted_dpo", weighted_dpo, columns=lambda n: {WEIGHT: 1})


# 2. The stage: one adapter per evaluation weight vector, each pair labelled by the heavier objective.
def run_toy(ctx: StageContext) -> dict:
    from sipo.training.settings import LossSpec

    cfg, objectives = ctx.cfg, list(ctx.cfg.objectives)
    tokenizer = ctx.models.load_tokenizer(ctx)
    pairs = training_union(ctx)
    prompts = format_prompts(tokenizer, [p.prompt for p in pairs], cfg)
    counts = {}
    for w in weight_grid(objectives, cfg.eval.grid):
        lead = max(objectives, key=lambda o: w[o])
        examples = [{"prompt": prompt, "chosen": chosen, "rejected": rejected, WEIGHT: [0.5 + w[lead]]}
                    for p, prompt in zip(pairs, prompts) if (pick := p.chosen_rejected(lead)) is not None
                    for chosen, rejected in [pick]]
        tag = weights_tag(w)
        counts[f"metrics_{tag}"] = train_adapter(ctx, tag, tokenizer, examples, ctx.out_dir / tag,
                                                 beta=cfg.dpo.beta, train=cfg.dpo.train,
                                                 loss=LossSpec(TOY_LOSS.name), lora=cfg.dpo.lora)
    return counts


TOY_STAGE = StageDef(name="toy", run=run_toy, help="toy baseline: weighted DPO per weight vector", reads="pairs",
                     writes="`toy/<w>/`", config_keys=("dpo", "eval.grid", "model", "seed"), loads_model=True,
                     optional=True, makes_adapters=True)

# 3. The method: its points are its adapters, one per weight vector of the grid.
TOY_METHOD = MethodDef("toy", "toy baseline: one weighted-DPO adapter per weight vector", adapter_per_weight("toy"),
                       trains=("toy",), weights=GRID_WEIGHTS, export="the toy adapter trained at these weights")


@pytest.fixture
def toy_registered():
    LOSSES.register(TOY_LOSS)
    STAGES.register(TOY_STAGE, before="evaluate")
    METHODS.register(TOY_METHOD)
    try:
        yield
    finally:
        METHODS.unregister("toy")
        STAGES.unregister("toy")
        LOSSES.unregister(TOY_LOSS.name)


def test_a_toy_trained_baseline_runs_end_to_end(toy_registered, tmp_path):
    from sipo.api import load
    from sipo.export import export_point
    from sipo.pipeline import plan, run_pipeline

    cfg = load_config(ROOT / "configs" / "smoke.yaml", [
        f"run_dir={tmp_path / 'run'}", f"data.path={ROOT / 'tests' / 'fixtures' / 'helpsteer_smoke.jsonl'}",
        "methods=[sft,toy]"])
    assert [s.id for s in plan(cfg)] == ["prepare", "sft", "dpo", "toy", "evaluate", "report"]
    evaluate = next(s for s in plan(cfg) if s.id == "evaluate")
    assert "toy" in evaluate.upstream

    statuses = run_pipeline(cfg)
    assert [s["status"] for s in statuses] == ["ran"] * 6
    run_dir = tmp_path / "run"
    grid = weight_grid(cfg.objectives, cfg.eval.grid)
    for w in grid:  # trained, with our loss
        assert (run_dir / "toy" / weights_tag(w) / "adapter_model.safetensors").is_file()
    manifest = json.loads((run_dir / "toy" / "manifest.json").read_text())
    steps = sum(v["steps"] for k, v in manifest["counts"].items() if k.startswith("metrics_"))
    assert steps > 0

    rows = [json.loads(line) for line in (run_dir / "evaluate" / "scores.jsonl").read_text().splitlines()]
    toy_rows = [r for r in rows if r["method"] == "toy"]
    assert {weights_tag(r["weights"]) for r in toy_rows} == {weights_tag(w) for w in grid}
    report = json.loads((run_dir / "report" / "report.json").read_text())
    dpo_steps = sum(v["steps"] for k, v in json.loads((run_dir / "dpo" / "manifest.json").read_text())["counts"]
                    .items() if k.startswith("metrics_"))
    assert report["methods"]["toy"]["training_steps"] == dpo_steps + steps

    run = load(run_dir, device="cpu")
    row = toy_rows[0]
    prompt = next(json.loads(line)["prompt"] for line in (run_dir / "prepare" / "test_prompts.jsonl").read_text().splitlines()
                  if json.loads(line)["prompt_id"] == row["prompt_id"])
    assert run.generate([prompt], row["weights"], method="toy") == [row["response"]]

    out = export_point(run_dir, row["weights"], tmp_path / "export", method="toy", merge=True)  # base: the run's own
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert "the toy adapter trained at these weights" in (out / "README.md").read_text()
