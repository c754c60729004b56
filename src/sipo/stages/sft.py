"""Stage ``sft``: build the base model and (``sft.enabled``) fine-tune it on ``prepare/sft.jsonl``.

With ``model.name_or_path: random`` a tiny Llama and its tokenizer (``model.random``) are created from scratch
(the synthetic benchmark and the smoke test); otherwise the configured model is fine-tuned. Writes
``sft/model/``, an ordinary Hugging Face model directory that every later stage loads.

    sipo stage sft configs/demo.yaml run_dir=runs/demo
"""

from __future__ import annotations

import json
import logging
import shutil

from sipo.artifacts import atomic_path
from sipo.conversation import decode, render_plain
from sipo.distributed import barrier
from sipo.errors import ConfigError
from sipo.logging_utils import is_main_process
from sipo.prompting import render
from sipo.stage import StageContext, StageDef, needs_sft_stage
from sipo.stages.model_calls import prompts_that_fit

logger = logging.getLogger(__name__)


def _vocabulary_text(prompt: str) -> str:
    return prompt if decode(prompt) is None else render_plain(prompt)


def _texts(ctx: StageContext, rows: list[dict]) -> list[str]:
    """Every text a word-level tokenizer must cover: SFT rows, pairs, test prompts and the templates."""
    # Prompts as the model sees them: a multi-turn prompt's turns, not its stored encoding. A one-turn prompt
    # counts as its own text, as it always has, so the vocabulary's order (and with it the random model of the
    # benchmark and the smoke runs) does not change for data without conversations.
    texts = [_vocabulary_text(r["prompt"]) for r in rows] + [r["completion"] for r in rows]
    for path in sorted(ctx.run_dir.path("prepare").glob("*.jsonl")):
        with open(path, encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                texts += [_vocabulary_text(v) if k == "prompt" else v for k, v in row.items()
                          if k in ("prompt", "response_a", "response_b")]
    texts.append(render(ctx.cfg.review.template, prompt="", response="", objectives=[], objective_list=""))
    texts.append(render(ctx.cfg.rewrite.template, prompt="", response="", review="", objectives=[],
                        objective_list=""))
    return texts


def run(ctx: StageContext) -> dict:
    from sipo.models.loading import build_random_model, format_prompt, load_tokenizer, resolve_model_source

    cfg = ctx.cfg
    with open(ctx.run_dir.path("prepare", "sft.jsonl"), encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    out = ctx.out_dir / "model"
    counts: dict = {"examples": len(rows)}
    if cfg.model.name_or_path == "random":
        start = ctx.out_dir / "init"
        if is_main_process():  # under accelerate launch every rank runs this stage; one of them writes
            with atomic_path(start) as tmp:
                build_random_model(cfg.model.random, _texts(ctx, rows), tmp, seed=cfg.seed)
        barrier()
        source = str(start)
        counts["initialised"] = "random"
    else:
        source = resolve_model_source(cfg.model)
    if not cfg.sft.enabled:
        if is_main_process():
            with atomic_path(out) as tmp:
                shutil.copytree(source, tmp)
        return counts
    from sipo.training.sft import train_sft

    tokenizer = load_tokenizer(source, cfg.model)
    rows, counts["dropped_long_prompts"] = prompts_that_fit(tokenizer, rows, lambda r: r["prompt"], cfg, "sft")
    if not rows:
        raise ConfigError(f"config key 'model.max_prompt_tokens': every SFT prompt is longer than "
                          f"{cfg.model.max_prompt_tokens} tokens")
    system = cfg.model.system_prompt
    examples = [{"prompt": format_prompt(tokenizer, r["prompt"], cfg.model.prompt_template, system),
                 "completion": r["completion"]} for r in rows]
    counts["metrics"] = train_sft(model_path=source, tokenizer=tokenizer, examples=examples, out_dir=out,
                                  train=cfg.sft.train, seed=cfg.seed, device=ctx.device, dtype=cfg.model.dtype,
                                  max_prompt_tokens=cfg.model.max_prompt_tokens,
                                  max_response_tokens=cfg.model.max_response_tokens,
                                  trust_remote_code=cfg.model.trust_remote_code,
                                  allow_pickle=cfg.model.allow_pickle, tracking=ctx.tracking.for_adapter("model"))
    if cfg.model.name_or_path == "random" and is_main_process():
        shutil.rmtree(ctx.out_dir / "init", ignore_errors=True)
    return counts


SPEC = StageDef(
    name="sft", run=run,
    help="load the base model (a pretrained checkpoint, or a random init for tests and the synthetic benchmark) and fine-tune it (optional)",
    reads="`prepare/sft.jsonl`", writes="`sft/model/`",
    config_keys=("sft", "objective_descriptions", "review.template", "rewrite.template", "model", "seed"),
    loads_model=True, distributed=True, renders_templates=True, when=needs_sft_stage, builds_base_model=True,
    upstream=lambda cfg, before: ("prepare",),
    note="random model or sft.enabled"
)
