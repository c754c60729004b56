"""Mechanics shared by the stages: where models live, loading them once, sharded resumable work.

Sharding: long stages split their items into shards of ``shard_size`` prompts, write each finished shard
atomically under ``<stage>/shards/``, and merge them at the end by key. A killed stage therefore loses at most the
shard in progress, and with several processes (``accelerate launch``) each rank does the shards ``i`` with
``i % world_size == rank``; rank 0 merges after a barrier.

What a kill (SIGKILL, power loss) costs, by stage: sample, review, rewrite and evaluate lose at most one shard;
dpo, realign, dpo_lw and modpo lose at most the adapter being trained (:func:`resumable_unit`; no trainer
checkpoints are written: they keep optimizer and RNG state as pickle files, which this project never loads);
prepare, sft, combine, filter and report start over. Partial work is kept only for a run with the same settings
(the pipeline empties the stage's folder otherwise), and a resumed run ends with the same files as an
uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sipo.artifacts import RunDir, atomic_write_json
from sipo.config import DecodeSettings, LoraSettings, PipelineConfig, TrainSettings
from sipo.distributed import barrier
from sipo.logging_utils import process_rank
from sipo.records import Pair, read_jsonl, write_jsonl
from sipo.stage import StageContext, needs_sft_stage

if TYPE_CHECKING:
    from sipo.training.settings import LossSpec

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

SHARD_SIZE = 16
"""Prompts per shard of generation and scoring work."""


def base_model_path(cfg: PipelineConfig, run_dir: RunDir) -> str:
    """The model every adapter is trained on: the sft stage's output, or the configured model."""
    if needs_sft_stage(cfg):
        return str(run_dir.path("sft", "model"))
    from sipo.models.loading import resolve_model_source

    return resolve_model_source(cfg.model)


def adapter_name(objective: str, round_: int) -> str:
    """peft adapter name of an objective's policy after ``round_`` (0: the round-1 DPO adapter)."""
    return f"r{round_}_{objective}"


def adapter_dir(run_dir: RunDir, objective: str, round_: int) -> Path:
    """Folder of an objective's adapter after ``round_`` realignments (0: the DPO adapter)."""
    if round_ == 0:
        return run_dir.path("dpo", objective)
    return run_dir.path(f"r{round_}/realign", objective)


def objective_adapters(ctx: StageContext, round_: int) -> dict[str, Path]:
    """Adapter-bank name -> folder of every objective's adapter after ``round_`` realignments (0: DPO)."""
    return {adapter_name(o, round_): adapter_dir(ctx.run_dir, o, round_) for o in ctx.cfg.objectives}


def load_bank(ctx: StageContext, adapters: Mapping[str, Path]):
    """The base model with the named adapters loaded (one copy of the base, cached across stages)."""
    from sipo.models.adapters import AdapterBank
    from sipo.models.loading import load_model, load_tokenizer

    path = base_model_path(ctx.cfg, ctx.run_dir)
    key = ("bank", path)
    if key not in ctx.cache:
        ctx.cache.clear()
        tokenizer = load_tokenizer(path, ctx.cfg.model)
        model = load_model(path, ctx.cfg.model, ctx.device)
        ctx.cache[key] = (AdapterBank(model), tokenizer)
    bank, tokenizer = ctx.cache[key]
    for name, directory in adapters.items():
        bank.load_adapter(name, directory)
    return bank, tokenizer


def format_prompts(tokenizer, prompts: Sequence[str], cfg: PipelineConfig) -> list[str]:
    from sipo.models.loading import format_prompt

    return [format_prompt(tokenizer, p, cfg.model.prompt_template) for p in prompts]


def decode(ctx: StageContext, bank, tokenizer, texts: Sequence[str], mixes: Sequence[Mapping[str, float]],
           settings: DecodeSettings, max_prompt_tokens: int) -> list[str]:
    """MOD-decode templated ``texts`` (one adapter mix each) with a stage's decode settings, through the context's
    generator."""
    return ctx.models.generate(bank, tokenizer, list(texts), list(mixes), max_new_tokens=settings.max_new_tokens,
                               temperature=settings.temperature, top_p=settings.top_p,
                               batch_size=settings.batch_size, seed=ctx.cfg.seed, max_prompt_tokens=max_prompt_tokens)


def train_adapter(ctx: StageContext, unit: str, tokenizer, examples: Sequence[Mapping[str, Any]], out: Path, *,
                  beta: float, train: TrainSettings, loss: LossSpec | None = None, lora: LoraSettings | None = None,
                  init_adapter: Path | None = None, reference: str = "base",
                  eval_examples: Sequence[Mapping[str, Any]] | None = None) -> dict:
    """Train one adapter of a training stage (dpo, realign, dpo_lw, modpo) into ``out``, resumably (a
    :func:`resumable_unit` named ``unit``), on the run's base model; returns its metrics."""
    from sipo.training.settings import AdapterTraining, LossSpec, ModelSettings

    settings = AdapterTraining(
        model=ModelSettings.of(ctx.cfg, base_model_path(ctx.cfg, ctx.run_dir), ctx.device), train=train, beta=beta,
        seed=ctx.cfg.seed, loss=loss or LossSpec(), lora=lora,
        init_adapter=str(init_adapter) if init_adapter is not None else None, reference=reference)  # type: ignore[arg-type]

    def work() -> dict:
        logger.info("%s: training the %s adapter on %d pairs (%s loss)", ctx.stage.id, unit, len(examples),
                    settings.loss.name)
        extra = {"eval_examples": eval_examples} if eval_examples else {}  # validation pairs (train.select_best)
        return ctx.models.train_adapter(settings, tokenizer=tokenizer, examples=examples, out_dir=out, **extra)

    return resumable_unit(ctx, unit, work, [out / "adapter_config.json"])


def read_conflict_pairs(ctx: StageContext) -> list[Pair]:
    """The conflicting pairs SIPO improves on: the ``label`` stage's when it runs (one dataset per objective),
    else ``prepare``'s."""
    from sipo.stage import needs_label_stage

    stage = "label" if needs_label_stage(ctx.cfg) else "prepare"
    return read_jsonl(ctx.run_dir.path(stage, "train_conflict.jsonl"), Pair)


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def shard(items: Sequence[T], rank: int, world_size: int) -> list[int]:
    """Indices of the shards (of ``items``) that process ``rank`` of ``world_size`` works on."""
    return [i for i in range(len(items)) if i % world_size == rank]


def run_sharded(
    out_dir: Path,
    items: Sequence[T],
    work: Callable[[Sequence[T]], list[R]],
    *,
    record: type[R],
    key: Callable[[R], Any],
    shard_size: int = SHARD_SIZE,
    desc: str = "",
) -> list[R]:
    """Apply ``work`` to shards of ``items``, resumably and across processes; return every shard's records (of
    type ``record``) sorted by ``key``.

    Every shard's records are written to ``out_dir/shards/size<S>/NNNNN.jsonl`` atomically; a shard file that
    exists is not recomputed (the folder names the shard size, so a killed run resumed with another ``shard_size``
    never mixes shards of two sizes). Records are merged by ``key`` (not by file order), so the result does not
    depend on the number of processes.
    """
    rank, world_size = process_rank()
    shard_dir = out_dir / "shards" / f"size{shard_size}"
    shard_dir.mkdir(parents=True, exist_ok=True)
    pieces = list(chunks(items, shard_size))
    mine = shard(pieces, rank, world_size)
    done = 0
    start = time.perf_counter()
    for index in mine:
        path = shard_dir / f"{index:05d}.jsonl"
        kept = path.is_file()
        if not kept:
            write_jsonl(path, work(pieces[index]))
        done += 1
        if desc:
            logger.info("%s: shard %d/%d %s (%.0fs)", desc, done, len(mine),
                        "kept from an interrupted run" if kept else "done", time.perf_counter() - start)
    barrier()
    rows: list[R] = []
    for index in range(len(pieces)):
        rows.extend(read_jsonl(shard_dir / f"{index:05d}.jsonl", record))
    rows.sort(key=key)
    return rows


def finish_shards(out_dir: Path) -> None:
    """Remove the shard files once the merged output is written (rank 0 only, after a barrier)."""
    barrier()
    if process_rank()[0] != 0:
        return
    # rmtree: a run killed while writing a shard leaves a temporary folder next to the shard files.
    shutil.rmtree(out_dir / "shards", ignore_errors=True)


def write_output(path: Path, rows: Sequence[Any]) -> int:
    """Write a stage's merged output (rank 0 only: every rank holds the same rows); returns the row count."""
    if process_rank()[0] != 0:
        return len(rows)
    return write_jsonl(path, rows)


def soup_name(weights: Mapping[str, float], round_: int) -> str:
    """peft adapter name of the soup of round-``round_`` adapters at ``weights``."""
    from sipo.config import weights_tag

    return f"soup_r{round_}_" + weights_tag(weights).replace(".", "p")


def judge_rewards(ctx: StageContext, bank, tokenizer, items: Sequence[Any], judges: Sequence[str]
                  ) -> dict[str, dict[str, float]]:
    """Implicit reward of every item (a :class:`~sipo.judges.ScoreItem`: id, prompt, response) under every judge
    adapter, keyed by item id then judge name (reference log-probs computed once; items scored in the given order,
    so the batches do not depend on how the caller joins the results)."""
    from sipo.scoring.implicit import implicit_rewards

    ids = [item.id for item in items]
    if len(set(ids)) != len(ids):
        raise ValueError("judge_rewards: item ids must be unique")
    cfg = ctx.cfg
    prompts = format_prompts(tokenizer, [item.prompt for item in items], cfg)
    rewards = implicit_rewards(bank, tokenizer, prompts, [item.response for item in items], judges=judges,
                               beta=cfg.dpo.beta, batch_size=cfg.sample.decode.batch_size,
                               max_prompt_tokens=cfg.model.max_prompt_tokens,
                               max_response_tokens=cfg.model.max_response_tokens)
    columns = {name: [float(x) for x in values] for name, values in rewards.items()}
    return {item_id: {name: columns[name][i] for name in judges} for i, item_id in enumerate(ids)}


def load_tokenizer_only(ctx: StageContext):
    """The base model's tokenizer (from the cache when a bank is loaded)."""
    from sipo.models.loading import load_tokenizer

    path = base_model_path(ctx.cfg, ctx.run_dir)
    cached = ctx.cache.get(("bank", path))
    return cached[1] if cached else load_tokenizer(path, ctx.cfg.model)


def preference_examples(tokenizer, pairs: Sequence[Pair], objective: str, cfg: PipelineConfig) -> list[dict]:
    """trl-style ``{prompt, chosen, rejected}`` rows of one objective (ties skipped, prompts templated)."""
    rows = []
    for pair, prompt in zip(pairs, format_prompts(tokenizer, [p.prompt for p in pairs], cfg)):
        chosen_rejected = pair.chosen_rejected(objective)
        if chosen_rejected is not None:
            rows.append({"prompt": prompt, "chosen": chosen_rejected[0], "rejected": chosen_rejected[1]})
    return rows


def training_union(ctx: StageContext) -> list[Pair]:
    """Every pair of every objective's training mixture, once, sorted by pair_id."""
    unique: dict[str, Pair] = {}
    for objective in ctx.cfg.objectives:
        for pair in read_jsonl(ctx.run_dir.path("prepare", f"train_{objective}.jsonl"), Pair):
            unique[pair.pair_id] = pair
    return [unique[k] for k in sorted(unique)]


def prompts_that_fit(tokenizer, items: Sequence[T], prompt_of: Callable[[T], str], cfg: PipelineConfig,
                     what: str) -> tuple[list[T], int]:
    """The items whose prompt fits in ``model.max_prompt_tokens`` once templated and tokenized, and how many were
    dropped.

    Longer prompts are dropped, never cut (cutting would lose the start of the question), and counted: each stage
    that reads prompts from ``prepare`` (sft, dpo, sample, dpo_lw, modpo, evaluate) calls this first and reports
    the count as ``dropped_long_prompts`` in its manifest; later stages only see the prompts that fit.
    """
    from sipo.models.loading import encode_prompt, format_prompt

    limit = cfg.model.max_prompt_tokens
    lengths: dict[str, int] = {}
    kept = []
    for item in items:
        prompt = prompt_of(item)
        if prompt not in lengths:
            text = format_prompt(tokenizer, prompt, cfg.model.prompt_template)
            lengths[prompt] = len(encode_prompt(tokenizer, text, None))
        if lengths[prompt] <= limit:
            kept.append(item)
    dropped = len(items) - len(kept)
    if dropped:
        logger.warning("%s: dropped %d of %d whose prompt is longer than model.max_prompt_tokens=%d tokens",
                       what, dropped, len(items), limit)
    return kept, dropped


def resumable_unit(ctx: StageContext, name: str, work: Callable[[], dict], outputs: Sequence[Path] = ()) -> dict:
    """Do one unit of a stage's work (e.g. train one adapter) unless a killed run of this stage, with the same
    settings, finished it already; returns the unit's counts.

    Units are what a stage that trains several adapters can lose when killed: one adapter (trainer checkpoints are
    not kept). The record ``<stage>/<name>.done.json`` (``name`` is an objective or a weights tag, never data) is
    written after ``work`` returned, so after its outputs; a unit counts as done when the record and every path of
    ``outputs`` exist. The pipeline empties the folder when the settings changed; :func:`finish_units` removes the
    records when the stage is done, so that ``--force`` redoes every unit.
    """
    record = ctx.out_dir / f"{name}.done.json"
    if record.is_file() and all(Path(p).exists() for p in outputs):
        try:
            counts = json.loads(record.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            counts = None
        if isinstance(counts, dict):
            logger.info("%s: %s was finished by an interrupted run with the same settings; kept", ctx.stage.id, name)
            return counts
    if process_rank()[0] == 0:  # what a killed attempt at this unit left: atomic-write and trainer scratch folders
        for stale in ctx.out_dir.glob(f".{name}.*"):
            shutil.rmtree(stale, ignore_errors=True)
    barrier()
    counts = work()
    if process_rank()[0] == 0:
        atomic_write_json(record, counts)
    return counts


def finish_units(ctx: StageContext) -> None:
    """Remove the records of :func:`resumable_unit` once every unit of the stage is done (rank 0 only)."""
    barrier()
    if process_rank()[0] == 0:
        for record in ctx.out_dir.glob("*.done.json"):
            record.unlink()


def reuse_dpo_endpoint(ctx: StageContext, weights: Mapping[str, float]) -> bool:
    """For a one-hot ``weights``, DPO-LW and MODPO reduce to plain DPO on that objective: copy its round-1 DPO
    adapter to ``<stage>/<weights>/`` instead of training the same model again. Returns whether it did."""
    import shutil

    from sipo.artifacts import atomic_path
    from sipo.config import weights_tag

    active = [o for o, w in weights.items() if w > 0]
    if len(active) != 1:
        return False
    out = ctx.out_dir / weights_tag(weights)
    if process_rank()[0] == 0:
        with atomic_path(out) as tmp:
            shutil.copytree(adapter_dir(ctx.run_dir, active[0], 0), tmp)
    barrier()
    logger.info("%s: %s is plain DPO on %s; reusing its round-1 adapter", ctx.stage.name, weights_tag(weights),
                active[0])
    return True
