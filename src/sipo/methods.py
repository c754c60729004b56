"""The methods a run evaluates (``methods: [...]``): how each one decodes, what trains it, how it is drawn.

A method is a :class:`MethodDef` in :data:`METHODS`: its ``points`` function turns the evaluation grid into the
(weights, adapter mix) points that ``evaluate`` decodes, loading or building the adapters it needs into the shared
adapter bank; ``trains`` names the stages that must run for it (beyond ``prepare``, ``sft`` and ``dpo``); its colour
and marker are the same in every figure; its weight domain, rounds and export text say what ``sipo generate`` and
``sipo export`` accept and write. ``evaluate``, the report, the stage plan, :mod:`sipo.api`, :mod:`sipo.export` and
the command-line help read this registry and never branch on a method's name, so a new method (an ablation,
another baseline) is one :meth:`~sipo.registry.Registry.register` call.

Example::

    METHODS.register(MethodDef(name="mod_r0", help="MOD over the DPO adapters, again",
                               points=lambda m: [Job("mod_r0", 1, w, m.objective_mix(w, 0)) for w in m.grid]))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sipo.errors import ConfigError
from sipo.layout import adapter_dir, adapter_name, baseline_adapter_dir, baseline_adapter_name, soup_name
from sipo.registry import Registry

if TYPE_CHECKING:
    from sipo.artifacts import RunDir
    from sipo.config import PipelineConfig

BASE = "__base__"
"""The adapter-bank name of the base model (every adapter disabled)."""


@dataclass(frozen=True)
class Job:
    """One point of one method: decode every test prompt with ``mix`` and report it at ``weights``."""

    method: str
    round: int
    weights: dict
    mix: dict
    """peft adapter name -> decoding weight (one entry: that adapter alone; several: MOD over them)."""


@dataclass
class MethodContext:
    """What a method's ``points`` function gets: the config, the run directory, the adapter bank (holding the
    round-1 adapters ``r0_<objective>``) and the evaluation grid."""

    cfg: PipelineConfig
    run_dir: RunDir
    bank: Any
    grid: list[dict[str, float]]

    @property
    def objectives(self) -> list[str]:
        return list(self.cfg.objectives)

    def load_round(self, round_: int) -> None:
        """Load the objectives' adapters after ``round_`` realignments (round 0, the DPO adapters, is loaded)."""
        for o in self.objectives:
            self.bank.load_adapter(adapter_name(o, round_), adapter_dir(self.run_dir, o, round_))

    def objective_mix(self, weights: Mapping[str, float], round_: int) -> dict[str, float]:
        """MOD at ``weights`` over the objectives' adapters after ``round_`` realignments (0: the DPO adapters)."""
        return {adapter_name(o, round_): weights[o] for o in self.objectives}


ANY_WEIGHTS = "any"
"""Weight domains (:attr:`MethodDef.weights`): any weight vector (soups, MOD)."""
GRID_WEIGHTS = "grid"
"""Only the weight vectors of the run's ``eval.grid`` (one adapter trained per vector)."""
ONE_HOT = "one_hot"
"""Only one-hot weight vectors (one adapter per objective)."""
NO_WEIGHTS = "none"
"""No weights: the base model itself."""
WEIGHT_DOMAINS = (ANY_WEIGHTS, GRID_WEIGHTS, ONE_HOT, NO_WEIGHTS)


ROLES = ("baseline", "reference", "upper_bound", "target")
"""The methods' roles in the benchmark's validity conditions (:attr:`MethodDef.roles`)."""


def methods_with_role(role: str) -> tuple[str, ...]:
    """The registered methods that have ``role``, in registration order."""
    return tuple(name for name in METHODS if role in METHODS[name].roles)


def method_label(name: str) -> str:
    """How prose names a method: its ``label``, else its name (also for a name nobody registered)."""
    return (METHODS[name].label or name) if name in METHODS else name


StepCounts = Callable[[str], int]
"""``stage id -> optimizer steps of every adapter it trained`` (from its manifest)."""


@dataclass(frozen=True)
class MethodDef:
    name: str
    help: str
    points: Callable[[MethodContext], list[Job]]
    trains: tuple[str, ...] = ()
    """Stages that train this method's adapters, beyond prepare / sft / dpo (they run only when a method needs
    them)."""
    colour: str | None = None
    """Matplotlib colour; None: one of the report's spare colours."""
    marker: str | None = None
    joined: bool = True
    """Join the method's points in weight order in the figure (False for points that are not a path)."""
    check: Callable[[PipelineConfig], None] | None = None
    """Checks the config for this method at config load (``--dry-run`` included); raises ConfigError naming the
    key."""
    weights: str = ANY_WEIGHTS
    """The weight vectors the method has a model at (:data:`WEIGHT_DOMAINS`): ``sipo generate`` / ``export``
    refuse the others."""
    rounds: bool = False
    """One point set per self-improvement round (``--round``; the default is the last round); the others have
    round 1 only."""
    export: str | None = None
    """What ``sipo export`` writes for it, as the model card says it (``{round}`` is filled in); None: nothing to
    export."""
    default_export: bool = False
    """``sipo export``'s default method when the run has it (else ``dpo_soups``)."""
    steps: Callable[[PipelineConfig, StepCounts], dict[str, int]] | None = None
    """Report key -> optimizer steps of the preference training behind the method; None: the round-1 DPO steps
    plus those of the method's own stage (the stage of its name, when it trains one)."""
    no_gain_over: str | None = None
    """A method whose points, if this method's equal them, mean the method's extra work changed nothing (a
    pipeline-health warning)."""
    roles: tuple[str, ...] = ()
    """What the benchmark's validity conditions and oracle-gain share (:mod:`sipo.report.validity`) take it as
    (:data:`ROLES`): ``baseline`` (headroom is measured against the best of them), ``reference`` (the method the
    oracle bound must beat), ``upper_bound`` (the oracle bound), ``target`` (the method whose share of the oracle's
    gain is reported)."""
    label: str | None = None
    """How prose names it (``DPO-LW``); None: its name."""

    def __post_init__(self) -> None:
        if self.weights not in WEIGHT_DOMAINS:
            raise ValueError(f"method {self.name}: weights must be one of {', '.join(WEIGHT_DOMAINS)}")
        unknown = set(self.roles) - set(ROLES)
        if unknown:
            raise ValueError(f"method {self.name}: roles must be among {', '.join(ROLES)}, got {sorted(unknown)}")

    def training_steps(self, cfg: PipelineConfig, stage_steps: StepCounts) -> dict[str, int]:
        if self.steps is not None:
            return self.steps(cfg, stage_steps)
        own = stage_steps(self.name) if self.name in self.trains else 0
        return {self.name: stage_steps("dpo") + own}


METHODS: Registry[MethodDef] = Registry("method")


def _sft(m: MethodContext) -> list[Job]:
    return [Job("sft", 1, {}, {BASE: 1.0})]


def _dpo(m: MethodContext) -> list[Job]:
    return [Job("dpo", 1, {p: float(p == o) for p in m.objectives}, {adapter_name(o, 0): 1.0}) for o in m.objectives]


def _dpo_soups(m: MethodContext) -> list[Job]:
    jobs = []
    for w in m.grid:
        active = [o for o in m.objectives if w[o] > 0]
        if len(active) == 1:
            mix = {adapter_name(active[0], 0): 1.0}
        else:
            name = soup_name(w, 0)
            m.bank.add_soup(name, {adapter_name(o, 0): w[o] for o in m.objectives}, m.cfg.soup_mode)
            mix = {name: 1.0}
        jobs.append(Job("dpo_soups", 1, w, mix))
    return jobs


def _mod(m: MethodContext) -> list[Job]:
    return [Job("mod", 1, w, m.objective_mix(w, 0)) for w in m.grid]


def _sipo(m: MethodContext) -> list[Job]:
    jobs = []
    for r in range(1, m.cfg.rounds + 1):
        m.load_round(r)
        jobs += [Job("sipo", r, w, m.objective_mix(w, r)) for w in m.grid]
    return jobs


def adapter_per_weight(method: str) -> Callable[[MethodContext], list[Job]]:
    """The points of a method that trains one adapter per evaluation weight vector, in ``<method>/<weights>/``."""

    def points(m: MethodContext) -> list[Job]:
        jobs = []
        for w in m.grid:
            name = baseline_adapter_name(method, w)
            m.bank.load_adapter(name, baseline_adapter_dir(m.run_dir, method, w))
            jobs.append(Job(method, 1, w, {name: 1.0}))
        return jobs

    return points


def _sipo_steps(cfg: PipelineConfig, stage_steps: StepCounts) -> dict[str, int]:
    """Round-1 DPO plus every re-alignment up to the round; earlier rounds keyed ``sipo@r<k>``."""
    steps, total = {}, stage_steps("dpo")
    for r in range(1, cfg.rounds + 1):
        total += stage_steps(f"r{r}/realign")
        steps["sipo" if r == cfg.rounds else f"sipo@r{r}"] = total
    return steps


_MOD_EXPORT = ("the LoRA soup of the {what}; the run evaluated `{name}` by MOD decoding over those adapters, which "
               "this single model approximates")

for _method in (
    MethodDef("sft", "the base model (one point)", _sft, colour="#000000", marker="*", weights=NO_WEIGHTS,
              steps=lambda cfg, stage_steps: {"sft": 0}),
    MethodDef("dpo", "each objective's round-1 DPO adapter alone (the end points)", _dpo, colour="#7f7f7f",
              marker="s", joined=False, weights=ONE_HOT, export="one objective's round-1 DPO adapter",
              roles=("baseline",), label="DPO"),
    MethodDef("dpo_soups", "the LoRA soup of the round-1 adapters at each weight vector", _dpo_soups,
              colour="#1f77b4", marker="o",
              export="the LoRA soup of the round-1 DPO adapters (the model the run evaluated as dpo_soups)",
              roles=("baseline",), label="DPO soups"),
    MethodDef("mod", "multi-objective decoding over the round-1 adapters", _mod, colour="#ff7f0e", marker="^",
              export=_MOD_EXPORT.format(what="round-1 DPO adapters", name="mod"), roles=("baseline", "reference"),
              label="MOD"),
    MethodDef("dpo_lw", "one adapter per weight vector, weighted sum of DPO losses", adapter_per_weight("dpo_lw"),
              trains=("dpo_lw",), colour="#2ca02c", marker="D", weights=GRID_WEIGHTS,
              export="the DPO-LW adapter trained at these weights", roles=("baseline",), label="DPO-LW"),
    MethodDef("modpo", "one adapter per weight vector, MODPO margins", adapter_per_weight("modpo"),
              trains=("modpo",), colour="#9467bd", marker="v", weights=GRID_WEIGHTS,
              export="the MODPO adapter trained at these weights", roles=("baseline",), label="MODPO"),
    MethodDef("sipo", "MOD over the realigned adapters of every round", _sipo,
              trains=("label", "sample", "review", "rewrite", "combine", "filter", "realign", "review_probe"),
              colour="#d62728",
              marker="P", rounds=True, export=_MOD_EXPORT.format(what="round-{round} realigned adapters", name="sipo"),
              default_export=True, steps=_sipo_steps, no_gain_over="mod", roles=("target",), label="SIPO"),
):
    METHODS.register(_method)


def _ablation(method: str) -> Callable[[MethodContext], list[Job]]:
    """MOD over an ablation's re-aligned adapters, ``<method>/<objective>/`` (docs/benchmark.md)."""

    def points(m: MethodContext) -> list[Job]:
        names = {o: f"{method}_{o}" for o in m.objectives}
        for o, name in names.items():
            m.bank.load_adapter(name, m.run_dir.path(method, o))
        return [Job(method, 1, w, {names[o]: w[o] for o in m.objectives}) for w in m.grid]

    return points


def _needs_oracle(cfg: PipelineConfig) -> None:
    """The oracle filter selects with the data source's exact judge, which only a source that knows the truth has."""
    from sipo.data import SOURCES

    if cfg.data.source in SOURCES and SOURCES[cfg.data.source].oracle is not None:
        return
    with_oracle = ", ".join(source.name for source in SOURCES.values() if source.oracle is not None)
    raise ConfigError(f"config key 'methods': sipo_oracle_filter needs the exact oracle of data.source: {with_oracle}")


_ROUND_ONE = ("label", "sample", "review", "rewrite", "combine", "filter", "realign")
for _method in (
    MethodDef("sipo_no_rewrite", "ablation: SIPO without review and rewrite (MOD samples straight to the filter)",
              _ablation("sipo_no_rewrite"), trains=(*_ROUND_ONE, "sipo_no_rewrite"), colour="#e377c2", marker="x"),
    MethodDef("sipo_no_filter", "ablation: SIPO without the filter (best summed judge reward)",
              _ablation("sipo_no_filter"), trains=(*_ROUND_ONE, "sipo_no_filter"), colour="#8c564b", marker="<"),
    MethodDef("sipo_oracle_filter", "upper bound: the oracle filters SIPO's candidates (synthetic benchmark)",
              _ablation("sipo_oracle_filter"), trains=(*_ROUND_ONE, "sipo_oracle_filter"), colour="#17becf",
              marker=">", check=_needs_oracle, roles=("upper_bound",)),
    MethodDef("nll_control", "control: DPO + NLL on the original pairs, SIPO's re-alignment budget",
              _ablation("nll_control"), trains=(*_ROUND_ONE, "nll_control"), colour="#bcbd22", marker="h"),
):
    METHODS.register(_method)


def default_export_method(cfg: PipelineConfig) -> str:
    """``sipo export``'s method when none is given: a configured method marked ``default_export``, else the soup
    of the round-1 adapters (every run has them)."""
    for name in cfg.methods:
        if name in METHODS and METHODS[name].default_export:
            return name
    return "dpo_soups"


def with_rounds() -> list[str]:
    """The methods that have self-improvement rounds (``--round``)."""
    return [d.name for d in METHODS.values() if d.rounds]


def exportable() -> list[str]:
    """The methods ``sipo export`` can write, in registration order."""
    return [d.name for d in METHODS.values() if d.export is not None]


_DOMAIN_HELP = {ANY_WEIGHTS: "any weights", ONE_HOT: "one-hot weights", GRID_WEIGHTS: "only the weights of the "
                "run's eval.grid", NO_WEIGHTS: "weights ignored"}


def methods_help(names: Sequence[str]) -> str:
    """``name (weights it has a model at)`` for each method, for the command-line help."""
    return ", ".join(f"{n} ({_DOMAIN_HELP[METHODS[n].weights]})" for n in names)


def method_order(name: str) -> tuple[int, str]:
    """Display order: registration order, unregistered names after, by name."""
    names = METHODS.names()
    return (names.index(name) if name in names else len(names), name)
