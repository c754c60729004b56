"""What a stage's fingerprint covers, and the check that a finished stage's outputs are still what it wrote.

A stage is skipped only when its manifest holds the fingerprint it would have now *and* its outputs are the files
the manifest recorded. The fingerprint hashes

- the stage's config values (its ``config_keys``);
- the content of the files outside the run directory that it reads (``data.path`` and ``data.test_path``, local
  files and folders, a local model folder, prompt templates given as paths, local reward-model folders), hashed
  once per run;
- the *result id* of every upstream stage it reads: a fresh id each time that stage runs, recorded in its manifest.

So a changed setting, an edited data file or model, a forced re-run or a re-run caused by a deleted or altered
output all re-run exactly the stages downstream of the change, and a final run always equals a clean run of the
same config. Large files are identified by :func:`sipo.artifacts.content_hash` (whole below 256 MiB, sampled
above), so checking a model folder of gigabytes costs a fraction of a second.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any

from sipo.artifacts import RunDir, changed_files, content_hash, files_table, stable_hash
from sipo.config import PipelineConfig
from sipo.prompting import template_files
from sipo.stage import StageDef

logger = logging.getLogger(__name__)

RESULT_NEUTRAL: dict[str, str] = {
    "run_dir": "where the run is written: a moved or copied run stays finished",
    "allow_single_objective": "only lets a one-objective config through validation; no stage reads it",
    "train.report_to": "where the trainers report metrics (tensorboard, wandb); no output depends on it",
    "train.logging_steps": "how often the trainers log metrics; the optimizer steps are the same",
    "shard_size": "how generation work is split so that a killed run loses at most one shard; it changes a result "
                  "only when a decode samples (each shard is seeded anew), and there it is fingerprinted "
                  "(sipo.stages.sharding.sampled_shard_keys)",
}
"""Config keys that no stage fingerprints, each with the reason it cannot change a result (the unit tests walk
the config tree and check that every other key is fingerprinted by some stage)."""

OUTPUT_SKIP = ("manifest.json",)
"""Top-level names of a stage folder that are not its outputs (hidden files, such as ``.started``, never are)."""

def external_inputs(cfg: PipelineConfig, definition: StageDef, has_sft_stage: bool) -> dict[str, Path]:
    """The files and folders outside the run directory that a stage reads, by label: its definition's
    ``inputs`` (the data files, a judge's models), the templates when it renders them, and a local base model
    when it loads it (when the run builds its base model, only the stage that builds it reads the configured one).

    Hub ids and the built-in model names (``random``, ``smollm2``) are covered by the config values themselves and
    are not listed; the packaged templates are, so that an edited template re-runs the stages that render it.
    """
    inputs: dict[str, Path] = dict(definition.inputs(cfg)) if definition.inputs is not None else {}
    if definition.renders_templates:
        inputs.update(template_files(cfg))
    reads_model = definition.builds_base_model if has_sft_stage else definition.loads_model
    name = cfg.model.name_or_path
    if reads_model and name not in ("random", "smollm2") and Path(name).expanduser().is_dir():
        inputs["model.name_or_path"] = Path(name).expanduser()
    return inputs


class RunHashes:
    """Content hashes computed once per run: external inputs by path, and verified stage outputs by result id."""

    def __init__(self) -> None:
        self._inputs: dict[Path, str] = {}
        self._verified: dict[tuple[str, str], list[str]] = {}

    def input_hash(self, path: Path) -> str:
        """A file's content hash, or a folder's (its files' names, sizes and content hashes; for the ``data.path``
        of a folder that is every file in it, a superset of the ``*.jsonl`` files read)."""
        key = path.resolve()
        if key not in self._inputs:
            if key.is_dir():
                self._inputs[key] = stable_hash(files_table(key))
            elif key.is_file():
                self._inputs[key] = content_hash(key)
            else:
                self._inputs[key] = "missing"
        return self._inputs[key]

    def changed_outputs(self, run_dir: RunDir, stage_id: str, manifest: dict[str, Any]) -> list[str]:
        """The outputs the manifest recorded that are missing or differ in size or content hash (checked once per
        run and result id)."""
        key = (stage_id, str(manifest.get("result")))
        if key not in self._verified:
            try:
                self._verified[key] = changed_files(run_dir.path(stage_id), manifest["outputs"])
            except (TypeError, ValueError, AttributeError):  # a hand-edited outputs table
                self._verified[key] = ["manifest.json (its outputs table is malformed)"]
        return self._verified[key]

    def outputs_intact(self, run_dir: RunDir, stage_id: str, manifest: dict[str, Any]) -> bool:
        """True when every output the manifest recorded is there with its size and content hash."""
        fresh = (stage_id, str(manifest.get("result"))) not in self._verified
        changed = self.changed_outputs(run_dir, stage_id, manifest)
        if changed and fresh:
            logger.warning("%-12s finished before, but its output %s is missing or changed; running it again",
                           stage_id, changed[0])
        return not changed


def stage_fingerprint(cfg: PipelineConfig, stage_id: str, config_values: dict[str, Any], inputs: dict[str, Path],
                      upstream_results: dict[str, str], hashes: RunHashes) -> str:
    return stable_hash({"stage": stage_id, "config": config_values,
                        "inputs": {label: hashes.input_hash(path) for label, path in sorted(inputs.items())},
                        "upstream": upstream_results})


def finished_result(run_dir: RunDir, stage_id: str, fingerprint: str, hashes: RunHashes) -> str | None:
    """The result id of a finished stage whose manifest holds ``fingerprint`` and whose outputs are intact, else
    None (never run, other settings or inputs, a manifest of an older format, or an output gone or changed)."""
    manifest = run_dir.read_manifest(stage_id)
    if not _current(manifest, fingerprint):
        return None
    if not hashes.outputs_intact(run_dir, stage_id, manifest):  # type: ignore[arg-type]
        return None
    return manifest["result"]  # type: ignore[index]


def _current(manifest: Any, fingerprint: str) -> bool:
    return (isinstance(manifest, dict) and manifest.get("fingerprint") == fingerprint
            and isinstance(manifest.get("outputs"), dict) and isinstance(manifest.get("result"), str))


def stage_status(run_dir: RunDir, stage_id: str, fingerprint: str, hashes: RunHashes) -> tuple[str | None, str]:
    """:func:`finished_result` with the reason when there is none, for the commands that read a run: ``(result
    id, "")`` or ``(None, why the stage cannot be trusted)``."""
    manifest = run_dir.read_manifest(stage_id)
    if not isinstance(manifest, dict):
        return None, "is not finished"
    if not _current(manifest, fingerprint):
        return None, "was finished with other settings or inputs than config.yaml says"
    changed = hashes.changed_outputs(run_dir, stage_id, manifest)
    if changed:
        return None, f"has an output that is missing or changed ({run_dir.path(stage_id, changed[0])})"
    return manifest["result"], ""


def record_outputs(run_dir: RunDir, stage_id: str, fingerprint: str) -> dict[str, Any]:
    """The manifest fields of a stage that has just run: its outputs table and a fresh result id."""
    outputs = files_table(run_dir.path(stage_id), skip=OUTPUT_SKIP)
    result = stable_hash({"fingerprint": fingerprint, "outputs": outputs, "run": uuid.uuid4().hex})
    return {"outputs": outputs, "result": result}
