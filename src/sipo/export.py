"""Export one point of a run's front as a model other tools load: ``sipo export RUN_DIR --weights ... --out DIR``.

What is written (atomically: the folder appears complete or not at all):

- without ``--merge``: ``DIR/`` is a plain PEFT LoRA adapter (``adapter_config.json``,
  ``adapter_model.safetensors``) whose ``base_model_name_or_path`` is the run's base model (an absolute path, or a
  hub id), plus the base model's tokenizer and a model card ``README.md``. A run whose base model is its own SFT
  model (``RUN_DIR/sft/model``) is refused: the adapter would not load once the run is moved or deleted;
- with ``--merge``: ``DIR/`` is a plain transformers model (``config.json``, ``model.safetensors``, generation
  config, tokenizer) with the adapter's update merged into the base weights (so vLLM and friends load it too),
  the adapter itself under ``DIR/adapter/``, and the model card.

The exported tokenizer writes prompts as the run did: for ``model.prompt_template: plain`` or ``raw`` (or ``chat``
with a base tokenizer that has no chat template) sipo writes that template into it as its chat template, so
``apply_chat_template(messages, add_generation_prompt=True, tokenize=False)`` gives the run's prompt; the model
card shows the format as text.

Which adapter: ``dpo_soups`` is the LoRA soup of the round-1 adapters at the weights (exactly the model the run
evaluated); ``dpo_lw`` and ``modpo`` their adapter at a weight vector of the evaluation grid; ``dpo`` an objective's
adapter (one-hot weights). ``sipo`` and ``mod`` decode with MOD, a mix of several models' next-token
distributions that no single set of weights reproduces: their export is the soup (weight-space interpolation, with
the run's ``soup_mode``) of the adapters MOD mixes (the last round's realigned adapters for ``sipo``), and the
model card says so.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sipo.api import AlignedRun, parse_weights
from sipo.artifacts import atomic_path, atomic_write_text
from sipo.config import weights_tag
from sipo.errors import ConfigError
from sipo.layout import base_model_path, soup_name
from sipo.methods import METHODS, NO_WEIGHTS, default_export_method, exportable
from sipo.models.portable import portable_base_name, set_adapter_base
from sipo.report.build import format_hypervolume, read_report
from sipo.report.plot import weights_label

logger = logging.getLogger(__name__)



def default_method(run: AlignedRun) -> str:
    return default_export_method(run.cfg)


def export_adapter_name(run: AlignedRun, method: str, weights: Mapping[str, float], round_: int | None) -> str:
    """Load (or build) the single adapter that represents (method, weights, round) in the run's bank; its name."""
    job = run.point(method, weights, round_)
    active = {name: w for name, w in job.mix.items() if w != 0}
    if len(active) == 1:
        return next(iter(active))
    bank, _ = run.bank()
    name = "export_" + soup_name(job.weights, job.round)
    bank.add_soup(name, active, run.cfg.soup_mode)
    return name


def _front_table(report: Mapping[str, Any], key: str, objectives: list[str]) -> list[str]:
    entry = report["methods"][key]
    front = set(entry.get("front", []))
    lines = [f"The run's `{key}` points (judge `{report['judge']}`, mean over the test prompts; "
             f"hypervolume {format_hypervolume(entry['hypervolume'])} above the reference point "
             f"({', '.join(f'{x:g}' for x in report['reference_point'])})):", "",
             "| weights | " + " | ".join(objectives) + " | on the front |",
             "|---|" + "---:|" * len(objectives) + ":---:|"]
    for index, point in enumerate(entry["points"]):
        scores = " | ".join(f"{point['scores'][o]:.4g}" for o in objectives)
        lines.append(f"| {weights_label(point['weights'], objectives)} | {scores} | "
                     f"{'yes' if index in front else ''} |")
    return lines


def prompt_format_lines(template: str, chat_template: str | None, system_prompt: str | None = None) -> list[str]:
    """The model card's *Prompt format* section: the run's ``model.prompt_template`` as text, and how the exported
    tokenizer writes it (``chat_template``: the one sipo wrote into it, None: the base tokenizer's own; with the
    tokenizer's own template and ``model.system_prompt``, the one sipo wrote is that template after a line adding
    the system turn)."""
    if template == "chat" and system_prompt is not None and chat_template is not None:
        return [f"The run wrote prompts with the base tokenizer's own chat template and the system turn "
                f"{system_prompt!r} (`model.system_prompt`) before every conversation that has none; the exported "
                "tokenizer's chat template adds that turn, so `tokenizer.apply_chat_template(messages, "
                "add_generation_prompt=True, tokenize=False)` writes a prompt the way the run did."]
    if chat_template is None:
        return [f"The run wrote prompts with the base tokenizer's own chat template (`model.prompt_template: "
                f"{template}`); the exported tokenizer keeps it, so "
                "`tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)` writes a "
                "prompt the way the run did."]
    example = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
               {"role": "user", "content": "Name a colour."}]
    from jinja2 import Environment

    rendered = Environment().from_string(chat_template).render(messages=example, add_generation_prompt=True)
    return [f"The run wrote prompts with sipo's `{template}` template, and the exported tokenizer carries it as its "
            "chat template, so `tokenizer.apply_chat_template(messages, add_generation_prompt=True, "
            "tokenize=False)` writes a prompt exactly as the run did. A one-turn prompt and a conversation:", "",
            "```text",
            Environment().from_string(chat_template).render(messages=example[-1:], add_generation_prompt=True),
            rendered, "```", "", "The chat template:", "", "```jinja", chat_template, "```"]


def model_card(run: AlignedRun, method: str, weights: Mapping[str, float], round_: int, merged: bool,
               base: str, chat_template: str | None = None) -> str:
    """The export's README.md: where it came from, what it is, its prompt format, how to load it, and the
    method's front."""
    objectives = run.objectives
    run_name = Path(run.cfg.run_dir).name
    shown = ", ".join(f"{o}={weights[o]:g}" for o in objectives)
    definition = METHODS[method]
    what = (definition.export or "").format(round=round_)
    lines = [
        f"# {run_name}: {method} at ({shown})",
        "",
        f"Exported by sipo from the run directory `{Path(run.cfg.run_dir).resolve()}`.",
        "",
        f"- Method: `{method}`" + (f", round {round_}" if definition.rounds else "") + f": {what}.",
        f"- Weights: {weights_label(weights, objectives)} over ({', '.join(objectives)}).",
        f"- Base model: `{base}`; soup mode `{run.cfg.soup_mode}`.",
        "",
        "## Prompt format",
        "",
        *prompt_format_lines(run.cfg.model.prompt_template, chat_template, run.cfg.model.system_prompt),
        "",
        *(f"> **Warning: {line}.** This model may not follow from the run's config.yaml, and the front below "
          "may not be this model's.\n" for line in run.stale),
        "## Loading",
        "",
        "```python",
    ]
    if merged:
        lines += ["from transformers import AutoModelForCausalLM, AutoTokenizer",
                  "model = AutoModelForCausalLM.from_pretrained(FOLDER)",
                  "tokenizer = AutoTokenizer.from_pretrained(FOLDER)",
                  "# the unmerged adapter: peft.PeftModel.from_pretrained(base, FOLDER + '/adapter')"]
    else:
        lines += ["from peft import AutoPeftModelForCausalLM",
                  "from transformers import AutoTokenizer",
                  "model = AutoPeftModelForCausalLM.from_pretrained(FOLDER)",
                  "tokenizer = AutoTokenizer.from_pretrained(FOLDER)"]
    lines += ["```", ""]
    report_path = run.run_dir.path("report", "report.json")
    if report_path.is_file():
        report = read_report(report_path)
        key = method if method in report.get("methods", {}) else None
        lines += ["## The method's front", ""]
        lines += _front_table(report, key, objectives) if key else [f"The run's report has no `{method}` entry."]
        lines.append("")
    else:
        lines += ["The run has no report (report/report.json), so no front is shown.", ""]
    return "\n".join(lines)


def export_point(run_dir: str | Path, weights: str | Mapping[str, float], out: str | Path, *,
                 method: str | None = None, round_: int | None = None, merge: bool = False,
                 device: str = "cpu", allow_stale: bool = False) -> Path:
    """Write the model of (method, weights, round) of a finished run to ``out`` (see the module docstring).

    The stages the export reads (the adapters' stages, and the report for the model card's front) must check out
    against the run's config.yaml (:func:`sipo.pipeline.check_before_reading`); with ``allow_stale`` a run that
    does not is exported anyway, and the model card says so.

    Raises:
        ConfigError: ``out`` exists and is not empty, the method cannot be exported (``sft``: use the base model
            itself), or the point does not exist (see :meth:`sipo.api.AlignedRun.point`).
        RunDirError: a stage it reads does not check out (without ``allow_stale``).
    """
    from transformers import AutoTokenizer

    from sipo.api import reader_stages
    from sipo.models.loading import run_chat_template  # torch: imported on first use

    run = AlignedRun(run_dir, device=device, allow_stale=allow_stale)
    method = method or default_method(run)
    if method not in METHODS or METHODS[method].export is None:
        base_model = method in METHODS and METHODS[method].weights == NO_WEIGHTS
        hint = " (it is the base model: RUN_DIR/sft/model or model.name_or_path)" if base_model else ""
        raise ConfigError(f"--method: {method} has no adapter to export{hint}; choose from {', '.join(exportable())}")
    parsed = parse_weights(weights, run.objectives)
    round_ = run.default_round(method) if round_ is None else int(round_)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out: '{out}' exists and is not an empty folder; choose a new one")
    run.check_stages([*reader_stages(run.cfg, method, round_), "report"], "export")
    _remove_scratch(out)
    base = base_model_path(run.cfg, run.run_dir)
    if not merge and _inside(base, run.run_dir.root):
        raise ConfigError(
            f"export: the run's base model is its own SFT model ({base}), so an adapter alone would name a folder "
            "inside the run directory and stop loading when the run is moved or deleted; give --merge for a model "
            "that stands alone (the adapter is then kept under OUT/adapter/)")
    name = export_adapter_name(run, method, parsed, round_)
    bank, _ = run.bank()

    with atomic_path(out) as tmp:
        tmp.mkdir()
        adapter_out = tmp / "adapter" if merge else tmp
        staging = tmp / ".staging"
        bank.model.save_pretrained(str(staging), selected_adapters=[name], safe_serialization=True)
        saved = staging / name if (staging / name).is_dir() else staging
        adapter_out.mkdir(parents=True, exist_ok=True)
        for item in ("adapter_config.json", "adapter_model.safetensors"):
            shutil.move(str(saved / item), str(adapter_out / item))
        shutil.rmtree(staging)
        _plain_adapter_config(adapter_out)
        set_adapter_base(adapter_out, base)
        tokenizer = AutoTokenizer.from_pretrained(portable_base_name(base),
                                                  trust_remote_code=run.cfg.model.trust_remote_code)
        chat_template = run_chat_template(tokenizer, run.cfg.model.prompt_template, run.cfg.model.system_prompt)
        if chat_template is not None:  # the run's prompt format, for apply_chat_template
            tokenizer.chat_template = chat_template
        if merge:
            _merge(run, base, adapter_out, tmp)
        tokenizer.save_pretrained(str(tmp))
        atomic_write_text(tmp / "README.md", model_card(run, method, parsed, round_, merge, portable_base_name(base),
                                                        chat_template))
    logger.info("export: %s at %s -> %s%s", method, weights_tag(parsed), out, " (merged)" if merge else "")
    return out


def _inside(path: str, folder: Path) -> bool:
    """Whether ``path`` (a local folder or a hub id) lies inside ``folder``."""
    local = Path(path).expanduser()
    return local.exists() and local.resolve().is_relative_to(folder.resolve())


def _remove_scratch(out: Path) -> None:
    """Remove what a killed export to ``out`` left next to it (atomic_path's ``.<name>.<random>.tmp`` folders)."""
    if out.parent.is_dir():
        for leftover in out.parent.glob(f".{out.name}.*.tmp"):
            shutil.rmtree(leftover, ignore_errors=True)


def _plain_adapter_config(folder: Path) -> None:
    """A soup's config is written for inference (``inference_mode``); nothing sipo-specific is left in it."""
    path = folder / "adapter_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config["inference_mode"] = True
    atomic_write_text(path, json.dumps(config, indent=2, sort_keys=True) + "\n")


def _merge(run: AlignedRun, base: str, adapter_folder: Path, out: Path) -> None:
    """Merge the adapter into a fresh copy of the base weights and save a plain transformers model."""
    from peft import PeftModel

    from sipo.models.loading import load_model

    model = load_model(base, run.cfg.model, "cpu")
    merged = PeftModel.from_pretrained(model, str(adapter_folder)).merge_and_unload()
    merged.save_pretrained(str(out), safe_serialization=True)
