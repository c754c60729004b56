"""Use a finished run: decode prompts with any method at any weight vector.

The point of multi-objective alignment is that the trade-off is picked at inference time. :func:`load` opens a run
directory and returns an :class:`AlignedRun` whose :meth:`~AlignedRun.generate` decodes prompts the way the
``evaluate`` stage does: the run's saved ``config.yaml`` gives the model, the prompt template and the decode
settings (``eval.decode``), :func:`sipo.stages.evaluate.plan_jobs` decides which adapters (or soups) a
(method, weights, round) point decodes with, and :func:`sipo.decoding.mod.mod_generate` decodes. So for a prompt,
method and weight vector that ``evaluate`` decoded, the response is the one in ``evaluate/scores.jsonl``.

Example::

    import sipo

    run = sipo.load("runs/demo")
    run.generate(["What is the capital of Zarnia?"], {"correctness": 0.3, "verbosity": 0.7}, method="sipo")

Each method's definition (:class:`sipo.methods.MethodDef`) says at which weights it has a model: any weight vector
(``dpo_soups``, ``mod``, ``sipo``), only those of ``eval.grid`` (``dpo_lw`` and ``modpo`` train one adapter per
vector), only one-hot weights (``dpo``) or none (``sft``, the base model: its weights are ignored).
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sipo.artifacts import RunDir
from sipo.config import PipelineConfig, WeightGrid, check_device, resolve_device, weights_tag
from sipo.configure import load_config
from sipo.errors import ConfigError, RunDirError
from sipo.layout import adapter_dir, adapter_name, baseline_adapter_dir
from sipo.methods import GRID_WEIGHTS, METHODS, NO_WEIGHTS, ONE_HOT, MethodDef, with_rounds
from sipo.stage import StageContext, StageSpec
from sipo.stages.evaluate import plan_jobs
from sipo.stages.model_calls import format_prompts, load_bank

logger = logging.getLogger(__name__)

def parse_weights(text: str | Mapping[str, float] | Sequence[float] | None, objectives: Sequence[str],
                  what: str = "--weights") -> dict[str, float]:
    """A weight vector over ``objectives`` from ``"correctness=0.3,verbosity=0.7"``, ``"0.3,0.7"`` (objective
    order), a mapping or a sequence. Every objective needs a weight (``name=0`` for none), weights are
    non-negative and sum to 1 (as in the config's grids). Returns the weights in objective order.

    Raises:
        ConfigError: naming ``what``, on an unknown or missing objective, a non-number, a negative weight or a sum
            other than 1.
    """
    objectives = list(objectives)
    if text is None:
        raise ConfigError(f"{what}: give one weight per objective, e.g. "
                          + ",".join(f"{o}={1 / len(objectives):g}" for o in objectives))
    if isinstance(text, str):
        parts = [p.strip() for p in text.split(",") if p.strip()]
        if parts and all("=" in p for p in parts):
            pairs = [p.split("=", 1) for p in parts]
            raw: dict[str, Any] = {k.strip(): v.strip() for k, v in pairs}
        elif parts and not any("=" in p for p in parts):
            if len(parts) != len(objectives):
                raise ConfigError(f"{what}: {len(parts)} weights for {len(objectives)} objectives "
                                  f"({', '.join(objectives)})")
            raw = dict(zip(objectives, parts))
        else:
            raise ConfigError(f"{what}: '{text}' is not of the form "
                              + ",".join(f"{o}=W" for o in objectives))
    elif isinstance(text, Mapping):
        raw = dict(text)
    else:
        values = list(text)
        if len(values) != len(objectives):
            raise ConfigError(f"{what}: {len(values)} weights for {len(objectives)} objectives")
        raw = dict(zip(objectives, values))
    unknown = [k for k in raw if k not in objectives]
    if unknown:
        raise ConfigError(f"{what}: '{unknown[0]}' is not an objective of this run ({', '.join(objectives)})")
    missing = [o for o in objectives if o not in raw]
    if missing:
        raise ConfigError(f"{what}: no weight for objective '{missing[0]}' (give {missing[0]}=0 for none)")
    weights = {}
    for o in objectives:
        try:
            weights[o] = float(raw[o])
        except (TypeError, ValueError):
            raise ConfigError(f"{what}: weight of '{o}' is not a number: {raw[o]!r}") from None
        if not math.isfinite(weights[o]) or weights[o] < 0:
            raise ConfigError(f"{what}: weight of '{o}' must be a finite number >= 0, got {raw[o]!r}")
    if not math.isclose(sum(weights.values()), 1.0, abs_tol=1e-6):
        raise ConfigError(f"{what}: weights must sum to 1 (they sum to {sum(weights.values()):g})")
    return weights


def open_run_config(run_dir: str | Path) -> PipelineConfig:
    """The saved config of a run directory, with ``run_dir`` pointing at where the folder is now."""
    root = Path(run_dir)
    saved = root / "config.yaml"
    if not saved.is_file():
        raise RunDirError(f"{saved}: not found; is {run_dir} a sipo run directory?")
    return load_config(saved, [f"run_dir={root}"])


def reader_stages(cfg: PipelineConfig, method: str, round_: int) -> list[str]:
    """The stages whose outputs decoding ``method`` at round ``round_`` reads: ``dpo`` (the adapter bank holds the
    round-1 adapters; its upstream stages give the pairs and the base model) and the stage that trained the
    method's own adapters, if any."""
    from sipo.pipeline import plan
    from sipo.stages.registry import STAGES

    planned = [s.id for s in plan(cfg)]
    needed = [s for s in ("dpo",) if s in planned]
    for name in METHODS[method].trains:
        definition = STAGES[name]
        stage_id = f"r{round_}/{name}" if definition.per_round else name
        if definition.makes_adapters and stage_id in planned:
            needed.append(stage_id)
    return needed


class AlignedRun:
    """A finished run, ready to decode (see the module docstring). The base model is loaded once, at the first
    call, and adapters as the methods need them.

    Before a point is decoded, the stages it reads are checked (:func:`sipo.pipeline.check_before_reading`):
    finished, under the fingerprint that ``config.yaml`` gives them, with their recorded outputs. A run that does
    not check out is refused, unless ``allow_stale``: then :attr:`stale` holds the reason, for the output."""

    def __init__(self, run_dir: str | Path, device: str | None = None, *, allow_stale: bool = False):
        self.cfg = open_run_config(run_dir)
        self.run_dir = RunDir(run_dir)
        self.device = check_device(device) if device is not None else resolve_device(self.cfg)
        self.allow_stale = allow_stale
        self.stale: list[str] = []
        """Why the run did not check out, when ``allow_stale`` let it through (empty: it checked out)."""
        self._checked: set[tuple[str, ...]] = set()
        self._cache: dict[str, Any] = {}

    def check_stages(self, needed: Sequence[str], what: str = "generate") -> None:
        """Refuse (or, with ``allow_stale``, note) a run whose stages ``needed`` do not check out; once per set."""
        from sipo.pipeline import check_before_reading

        key = tuple(needed)
        if key in self._checked:
            return
        line = check_before_reading(self.cfg, self.run_dir, needed, what, allow_stale=self.allow_stale)
        self._checked.add(key)
        if line is not None and line not in self.stale:
            self.stale.append(line)

    @property
    def objectives(self) -> list[str]:
        return list(self.cfg.objectives)

    @property
    def last_round(self) -> int:
        return int(self.cfg.rounds)

    def _context(self, cfg: PipelineConfig):
        return StageContext(cfg=cfg, run_dir=self.run_dir, stage=StageSpec("evaluate"), device=self.device,
                            cache=self._cache)

    def bank(self):
        """The run's adapter bank (base model + the round-1 adapters), and its tokenizer."""
        objs = self.objectives
        return load_bank(self._context(self.cfg), {adapter_name(o, 0): adapter_dir(self.run_dir, o, 0) for o in objs})

    def _check_method(self, method: str, weights: Mapping[str, float], round_: int) -> MethodDef:
        """The method's definition, once (method, weights, round) is a point the run has a model for."""
        if method not in METHODS:
            raise ConfigError(f"--method: unknown method '{method}' (choose from {', '.join(METHODS)})")
        definition = METHODS[method]
        if definition.rounds:
            if not 1 <= round_ <= self.last_round:
                raise ConfigError(f"--round: this run has rounds 1..{self.last_round}, not {round_}")
            missing = [o for o in self.objectives if not adapter_dir(self.run_dir, o, round_).is_dir()]
            if missing:
                raise RunDirError(f"{adapter_dir(self.run_dir, missing[0], round_)}: not found; the run has no "
                                  f"round-{round_} {method} adapters (was {method} in methods, and did the run "
                                  "finish?)")
        elif round_ != 1:
            raise ConfigError(f"--round: only {' and '.join(with_rounds())} has rounds; {method} has round 1 only")
        if definition.weights == NO_WEIGHTS:
            return definition
        if definition.weights == ONE_HOT and sorted(weights.values()) != [0.0] * (len(weights) - 1) + [1.0]:
            raise ConfigError(f"--weights: {method} has one adapter per objective, so only one-hot weights "
                              f"(e.g. {','.join(f'{o}={int(i == 0)}' for i, o in enumerate(self.objectives))})")
        if definition.weights == GRID_WEIGHTS:
            folder = baseline_adapter_dir(self.run_dir, method, weights)
            if not folder.is_dir():
                trained = sorted(p.name for p in self.run_dir.path(method).glob("*") if p.is_dir()) \
                    if self.run_dir.path(method).is_dir() else []
                raise ConfigError(f"--weights: {method} trained one adapter per weight vector of the evaluation "
                                  f"grid and has none at {weights_tag(weights)} (it has: "
                                  f"{', '.join(trained) or 'none; was it in methods?'})")
        return definition

    def default_round(self, method: str) -> int:
        """The last round for a method with rounds, else 1."""
        return self.last_round if method in METHODS and METHODS[method].rounds else 1

    def point(self, method: str, weights: Mapping[str, float] | None, round_: int | None = None):
        """The :class:`~sipo.stages.evaluate.Job` that ``evaluate`` decodes for (method, weights, round), with
        its adapters loaded into the bank. ``round_`` defaults to the run's last round (a method with rounds) or
        1."""
        round_ = self.default_round(method) if round_ is None else int(round_)
        unweighted = method in METHODS and METHODS[method].weights == NO_WEIGHTS
        weights = {} if unweighted and weights is None else parse_weights(weights, self.objectives)
        self._check_method(method, weights, round_)
        self.check_stages(reader_stages(self.cfg, method, round_))
        bank, _ = self.bank()
        # evaluate's own planning, restricted to this one method and weight vector.
        cfg = copy.deepcopy(self.cfg)
        cfg.methods = [method]
        cfg.rounds = max(round_, 1)
        cfg.eval.grid = WeightGrid(explicit=[[weights[o] for o in self.objectives]] if weights else None)
        jobs = plan_jobs(self._context(cfg), bank)
        wanted = [j for j in jobs if j.round == round_ and (unweighted or _same(j.weights, weights))]
        if len(wanted) != 1:  # pragma: no cover - plan_jobs gives one job per (round, weights)
            raise RuntimeError(f"expected one evaluation point for {method} at {weights}, got {len(wanted)}")
        return wanted[0]

    def generate(self, prompts: str | Sequence[str] | Sequence[Sequence[Mapping[str, str]]],
                 weights: Mapping[str, float] | str | Sequence[float] | None = None,
                 *, method: str = "sipo", round: int | None = None, max_new_tokens: int | None = None,
                 temperature: float | None = None, top_p: float | None = None, progress: bool = False) -> list[str]:
        """Decode ``prompts`` with ``method`` at ``weights``; the run's prompt template is applied.

        A prompt is a user prompt string or a conversation: a list of ``{"role", "content"}`` messages ending with
        a user turn (one conversation alone may be given as the list itself). Decoding settings default to the
        run's ``eval.decode`` (and its seed), so the responses are those that ``evaluate`` wrote for the same
        prompt, method and weights.

        Raises:
            ConfigError: bad weights, an unknown method, a malformed conversation, or a point the run has no model
                for (see the module docstring).
        """
        from sipo.decoding.mod import mod_generate  # torch: imported on first use

        prompts = stored_prompts(prompts)
        if max_new_tokens is not None and (isinstance(max_new_tokens, bool) or int(max_new_tokens) < 1):
            raise ConfigError(f"--max-new-tokens: must be at least 1, got {max_new_tokens}")
        if temperature is not None and not (math.isfinite(float(temperature)) and float(temperature) >= 0):
            raise ConfigError(f"temperature: must be a finite number >= 0, got {temperature}")
        if top_p is not None and not 0.0 < float(top_p) <= 1.0:
            raise ConfigError(f"top_p: must be in (0, 1], got {top_p}")
        job = self.point(method, weights, round)
        bank, tokenizer = self.bank()
        decode = self.cfg.eval.decode
        texts = format_prompts(tokenizer, prompts, self.cfg)
        return mod_generate(
            bank, tokenizer, texts, [job.mix] * len(texts),
            max_new_tokens=decode.max_new_tokens if max_new_tokens is None else int(max_new_tokens),
            temperature=decode.temperature if temperature is None else float(temperature),
            top_p=decode.top_p if top_p is None else float(top_p),
            batch_size=decode.batch_size, seed=self.cfg.seed, max_prompt_tokens=self.cfg.model.max_prompt_tokens,
            progress=progress,
        )


def stored_prompts(prompts: Any) -> list[str]:
    """The prompt strings sipo stores (:mod:`sipo.conversation`) of one prompt or conversation, or a list of
    them; ConfigError naming the bad one."""
    from sipo import conversation

    if isinstance(prompts, str) or (isinstance(prompts, (list, tuple)) and prompts
                                    and isinstance(prompts[0], Mapping)):
        prompts = [prompts]
    stored = []
    for i, prompt in enumerate(prompts):
        try:
            stored.append(conversation.as_prompt(prompt, f"prompts[{i}]"))
        except ValueError as exc:
            raise ConfigError(f"{exc} (a string, or a list of {{role, content}} messages ending with a user "
                              "turn)") from None
    return stored


def _same(a: Mapping[str, float], b: Mapping[str, float]) -> bool:
    return set(a) == set(b) and all(math.isclose(float(a[k]), float(b[k]), abs_tol=1e-9) for k in a)


def rebuild_report(run_dir: str | Path, *, allow_stale: bool = False) -> Path:
    """``sipo report``: rewrite ``RUN_DIR/report/`` from a finished evaluate stage, once the evaluate stage (and
    every stage before it) checks out against config.yaml (:func:`sipo.pipeline.check_before_reading`); with
    ``allow_stale`` a run that does not is reported anyway, and report.md says so in its first lines."""
    from sipo.pipeline import check_before_reading
    from sipo.stages.report import report_run_dir

    cfg = open_run_config(run_dir)
    stale = check_before_reading(cfg, RunDir(run_dir), ["evaluate"], "report", allow_stale=allow_stale)
    return report_run_dir(str(run_dir), stale=stale)


def load(run_dir: str | Path, device: str | None = None, *, allow_stale: bool = False) -> AlignedRun:
    """Open a finished run directory for decoding; see :class:`AlignedRun`."""
    return AlignedRun(run_dir, device=device, allow_stale=allow_stale)
