"""Interrupted runs: a stage killed (SIGKILL) midway is resumed by the next ``sipo run`` and the final outputs are
identical to those of an uninterrupted run; changing one stage's settings re-runs that stage and the later ones.

Every run here is ``configs/smoke.yaml`` shrunk by overrides (:data:`TINY`) on a 13-prompt HelpSteer-format file
written by :func:`write_data`, with one prompt per shard (``shard_size=1``) so that a kill lands between shards.
One uninterrupted reference run (module fixture) is compared with runs killed while ``r1/sample`` and while
``dpo`` was running. The runs are subprocesses (``python -m sipo``) so that SIGKILL hits a real process; they are
marked slow. The fast tests at the end check the resumable pieces (shards, per-adapter units) in process.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "configs" / "smoke.yaml"

LONG = "Tell me about long"
"""Prompts starting with this are 744 characters long (24 + 60 x 12): with the byte tokenizer and the plain template
(``BEGINNING OF CONVERSATION: USER: {prompt} ASSISTANT:``, 44 more characters, plus BOS) they take 789 tokens,
over ``model.max_prompt_tokens=400``; every other prompt takes under 80."""

TINY = [
    "model.device=cpu", "model.prompt_template=plain", "model.max_prompt_tokens=400", "model.max_response_tokens=32",
    "model.random.tokenizer=byte", "model.random.max_position_embeddings=1024",
    "data.max_conflict_prompts=6", "data.max_test_prompts=3",
    "sft.train.max_steps=1", "dpo.train.max_steps=3", "realign.train.max_steps=1",
    "sample.grid.resolution=3", "sample.decode.max_new_tokens=16", "review.decode.max_new_tokens=6",
    "rewrite.decode.max_new_tokens=6", "filter.soups=false", "eval.grid.resolution=1",
    "eval.decode.max_new_tokens=6", "methods=[sft,mod,sipo]", "shard_size=1",
]

OUTPUTS = ["prepare/train_conflict.jsonl", "r1/sample/candidates.jsonl", "r1/review/reviews.jsonl",
           "r1/rewrite/rewrites.jsonl", "r1/combine/combined.jsonl", "r1/filter/selected.jsonl",
           "evaluate/scores.jsonl", "report/scores.jsonl", "report/summary.csv"]
"""Final and intermediate outputs compared byte for byte."""
ADAPTERS = ["dpo/correctness", "dpo/verbosity", "r1/realign/correctness", "r1/realign/verbosity"]
"""Adapters compared within float tolerance."""


def write_data(path: Path) -> Path:
    """13 prompts x 4 responses in HelpSteer's format. Under each prompt correctness and verbosity disagree on the
    first three responses (conflicting pairs) and agree against "No." (non-conflicting pairs). With seed 0 the
    three long prompts fall one in the test split and two among the six train_conflict prompts."""
    topics = ["cats", "tea", "rain", "maps", "bees", "salt", "kites", "moss", "jazz", "wool",
              "long cat", "long dog", "long eel"]
    rows = []
    for topic in topics:
        prompt = f"Tell me about {topic}."
        if topic.startswith("long"):
            prompt = f"Tell me about {topic}: " + "more words, " * 60
        name = topic.capitalize()
        for response, correctness, verbosity in [(f"{name} are nice.", 4, 1),
                                                 (f"{name} are purple and old and sing at night.", 1, 4),
                                                 (f"{name} exist; some say more.", 2, 2), ("No.", 0, 0)]:
            rows.append({"prompt": prompt, "response": response, "helpfulness": 2, "correctness": correctness,
                         "coherence": 3, "complexity": 1, "verbosity": verbosity})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", SIPO_NO_PROGRESS="1")
    return env


class Tiny:
    def __init__(self, root: Path):
        self.root = root
        self.data = write_data(root / "data.jsonl")

    def command(self, run_dir: Path, *overrides: str) -> list[str]:
        return [sys.executable, "-m", "sipo", "run", str(SMOKE), f"run_dir={run_dir}", f"data.path={self.data}",
                *TINY, *overrides]

    def run(self, run_dir: Path, *overrides: str) -> str:
        """Run to completion; returns stderr (the log)."""
        done = subprocess.run(self.command(run_dir, *overrides), capture_output=True, text=True, env=environment(),
                              cwd=REPO, timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stderr

    def run_and_kill(self, run_dir: Path, when: Callable[[], bool], timeout: float = 600) -> None:
        """Start a run and SIGKILL it (its whole process group) as soon as ``when()`` holds."""
        log = open(run_dir.parent / f"{run_dir.name}.killed.log", "w")
        proc = subprocess.Popen(self.command(run_dir), stdout=subprocess.DEVNULL, stderr=log, env=environment(),
                                cwd=REPO, start_new_session=True)
        deadline = time.monotonic() + timeout
        try:
            while not when():
                if proc.poll() is not None:
                    pytest.fail(f"the run ended (exit {proc.returncode}) before the moment to kill it")
                if time.monotonic() > deadline:
                    pytest.fail("timed out waiting for the moment to kill the run")
                time.sleep(0.005)
            os.killpg(proc.pid, signal.SIGKILL)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            log.close()
        assert proc.returncode == -signal.SIGKILL


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def ran_stages(log: str) -> list[str]:
    return re.findall(r"^\S+ (\S+)\s+running:", log, flags=re.MULTILINE)


def assert_same_outputs(a: Path, b: Path) -> None:
    import torch
    from safetensors.torch import load_file

    for name in OUTPUTS:
        assert (a / name).read_bytes() == (b / name).read_bytes(), f"{name} differs"
    for name in ADAPTERS:
        left, right = (load_file(str(d / name / "adapter_model.safetensors")) for d in (a, b))
        assert left.keys() == right.keys()
        for key in left:
            torch.testing.assert_close(left[key], right[key], rtol=0, atol=1e-6, msg=f"{name}: {key}")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Tiny:
    return Tiny(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def reference(tiny) -> Path:
    """An uninterrupted run."""
    run_dir = tiny.root / "reference"
    log = tiny.run(run_dir)
    assert ran_stages(log)[0] == "prepare" and ran_stages(log)[-1] == "report"
    return run_dir


def manifest(run_dir: Path, stage: str) -> dict:
    return json.loads((run_dir / stage / "manifest.json").read_text())


@pytest.mark.slow
def test_long_prompts_are_dropped_and_counted(reference):
    """Every stage that reads prompts from prepare drops those over model.max_prompt_tokens and counts them; the
    expected counts are the long prompts (see :data:`LONG`) in each prepare file."""

    def long_rows(name: str) -> int:
        rows = [json.loads(line) for line in (reference / "prepare" / name).read_text().splitlines()]
        return sum(r["prompt"].startswith(LONG) for r in rows)

    assert manifest(reference, "sft")["counts"]["dropped_long_prompts"] == long_rows("sft.jsonl") > 0
    assert manifest(reference, "dpo")["counts"]["dropped_long_prompts"] == {
        o: long_rows(f"train_{o}.jsonl") for o in ("correctness", "verbosity")}
    assert manifest(reference, "r1/sample")["counts"]["dropped_long_prompts"] == long_rows("train_conflict.jsonl") == 2
    assert manifest(reference, "evaluate")["counts"]["dropped_long_prompts"] == long_rows("test_prompts.jsonl") == 1
    for name in ("r1/sample/candidates.jsonl", "r1/filter/selected.jsonl"):
        assert LONG not in (reference / name).read_text()
    scored = {json.loads(line)["prompt_id"] for line in (reference / "evaluate/scores.jsonl").read_text().splitlines()}
    assert len(scored) == 2  # 3 test prompts, 1 dropped


@pytest.mark.slow
def test_sample_killed_midway_resumes_to_identical_outputs(tiny, reference, tmp_path):
    """Killed after the first of four sample shards: the next run keeps that shard, redoes the others and ends
    with the same files as the uninterrupted run."""
    run_dir = tmp_path / "killed"
    shards = run_dir / "r1" / "sample" / "shards" / "size1"
    # A shard counts as finished once its record is written (after the shard file itself).
    tiny.run_and_kill(run_dir, lambda: any(shards.glob("*.done.json")))
    assert not (run_dir / "r1/sample/manifest.json").exists()
    assert not (run_dir / "r1/sample/candidates.jsonl").exists()
    finished = sorted(p.name for p in shards.glob("*.done.json"))
    assert 1 <= len(finished) < 4, finished
    log = tiny.run(run_dir)
    assert ran_stages(log)[0] == "r1/sample"  # prepare, sft and dpo are skipped
    assert log.count("kept from an interrupted run") == len(finished)
    assert not (run_dir / "r1/sample/shards").exists()
    assert hidden(run_dir / "r1/sample") == [".started"]
    assert_same_outputs(reference, run_dir)


@pytest.mark.slow
def test_dpo_killed_between_objectives_keeps_the_first_adapter(tiny, reference, tmp_path):
    """Killed while training the second objective's adapter: the next run does not retrain the first one (same
    file, untouched) and ends with the same adapters and outputs as the uninterrupted run."""
    run_dir = tmp_path / "killed"
    first = run_dir / "dpo" / "correctness"
    tiny.run_and_kill(run_dir, lambda: (run_dir / "dpo" / "correctness.done.json").is_file())
    assert not (run_dir / "dpo/manifest.json").exists()
    assert not (run_dir / "dpo/verbosity.done.json").exists()
    before = (first / "adapter_model.safetensors").stat()
    log = tiny.run(run_dir)
    assert ran_stages(log)[0] == "dpo"
    assert "correctness was finished by an interrupted run with the same settings; kept" in log
    assert "training the correctness adapter" not in log and "training the verbosity adapter" in log
    after = (first / "adapter_model.safetensors").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert not list((run_dir / "dpo").glob("*.done.json"))
    assert hidden(run_dir / "dpo") == [".started"]  # the killed training's scratch folder is gone
    assert_same_outputs(reference, run_dir)


@pytest.mark.slow
def test_an_altered_kept_adapter_is_trained_again(tiny, reference, tmp_path):
    """Killed after the first adapter was saved, that adapter's lora_B scaled by 3: the next run trains it again
    (one warning naming it) and ends with the adapters and outputs of the uninterrupted run."""
    from safetensors.torch import load_file, save_file

    run_dir = tmp_path / "killed"
    first = run_dir / "dpo" / "correctness" / "adapter_model.safetensors"
    tiny.run_and_kill(run_dir, lambda: (run_dir / "dpo" / "correctness.done.json").is_file())
    tensors = load_file(str(first))
    save_file({k: v * 3 if "lora_B" in k else v for k, v in tensors.items()}, str(first))
    log = tiny.run(run_dir)
    assert ran_stages(log)[0] == "dpo"
    assert log.count("does not check out") == 1 and "dpo: correctness" in log
    assert "training the correctness adapter" in log
    assert_same_outputs(reference, run_dir)


@pytest.mark.slow
def test_changing_realign_settings_reruns_realign_and_later_stages_only(tiny, reference, tmp_path):
    run_dir = tmp_path / "copy"
    shutil.copytree(reference, run_dir)
    before = {stage: (run_dir / stage / "manifest.json").read_bytes()
              for stage in ("prepare", "sft", "dpo", "r1/sample", "r1/review", "r1/rewrite", "r1/combine",
                            "r1/filter")}
    log = tiny.run(run_dir, "realign.alpha=0.5", "realign.train.learning_rate=1e-3")
    assert ran_stages(log) == ["r1/realign", "evaluate", "report"]
    for stage, text in before.items():
        assert (run_dir / stage / "manifest.json").read_bytes() == text, stage
    again = tiny.run(run_dir, "realign.alpha=0.5", "realign.train.learning_rate=1e-3")
    assert ran_stages(again) == []


@pytest.mark.slow
def test_run_directory_holds_safetensors_and_fixed_names_only(reference):
    """Weights are safetensors (no pickle anywhere), and every file and folder name is fixed, a stage id, an
    objective or a weights tag: nothing from the data (prompts, responses, ids) names a path."""
    paths = list(reference.rglob("*"))
    assert not [p for p in paths if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".pickle")]
    assert (reference / "sft" / "model" / "model.safetensors").is_file()
    names = {p.name for p in paths}
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+", n) for n in names), names
    data_words = {"cats", "bees", "salt", "kites", "moss", "jazz", "wool", "long", "Tell"}  # ("rain" is in "train")
    assert not [n for n in names if any(w in n for w in data_words)]
    ids = set()
    for name in ("train_conflict.jsonl", "train_correctness.jsonl", "test_prompts.jsonl"):
        for line in (reference / "prepare" / name).read_text().splitlines():
            row = json.loads(line)
            ids |= {row["prompt_id"], row.get("pair_id", row["prompt_id"])}
    assert len(ids) > 10 and not [n for n in names if any(i in n for i in ids)]


# --- the resumable pieces, in process (fast) ------------------------------------------------------------------


class FakeContext:
    """What resumable_unit reads of a StageContext."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.stage = type("Stage", (), {"id": "dpo"})()


@pytest.fixture
def one_process(monkeypatch):
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)


def test_resumable_unit_runs_once_until_the_stage_finishes(tmp_path, one_process):
    from sipo.stages.sharding import finish_units, resumable_unit

    ctx = FakeContext(tmp_path)
    calls = []
    out = tmp_path / "correctness"

    def work():
        calls.append(1)
        out.mkdir(exist_ok=True)
        (out / "adapter_config.json").write_text("{}")
        (out / "adapter_model.safetensors").write_bytes(b"weights" * 10)
        return {"loss": 0.5, "nan": float("nan")}

    (tmp_path / ".correctness.trainer.abc").mkdir()  # scratch of a killed attempt
    first = resumable_unit(ctx, "correctness", work, out)
    assert not (tmp_path / ".correctness.trainer.abc").exists()
    second = resumable_unit(ctx, "correctness", work, out)  # as a resumed run would
    assert len(calls) == 1 and second["loss"] == first["loss"] == 0.5
    (out / "adapter_config.json").unlink()  # the record alone is not enough: the outputs must be there too
    resumable_unit(ctx, "correctness", work, out)
    assert len(calls) == 2
    finish_units(ctx)
    assert not list(tmp_path.glob("*.done.json"))
    resumable_unit(ctx, "correctness", work, out)  # a forced re-run does the work again
    assert len(calls) == 3


@pytest.mark.parametrize("damage", ["scaled", "emptied", "removed", "other_settings", "old_record", "no_record"])
def test_a_kept_unit_that_does_not_check_out_is_redone(tmp_path, one_process, damage, caplog):
    """A unit left by a killed run is reused only when its files are exactly the ones recorded, under the same
    stage fingerprint; otherwise it is trained again, with one warning naming it."""
    from sipo.stages.sharding import resumable_unit

    ctx = FakeContext(tmp_path)
    (tmp_path / ".started").write_text("fp1\n")
    out = tmp_path / "correctness"
    calls = []

    def work():
        calls.append(1)
        out.mkdir(exist_ok=True)
        (out / "adapter_config.json").write_text("{}")
        (out / "adapter_model.safetensors").write_bytes(bytes(range(200)))
        return {"loss": 0.5}

    resumable_unit(ctx, "correctness", work, out)
    record = tmp_path / "correctness.done.json"
    weights = out / "adapter_model.safetensors"
    if damage == "scaled":  # same size, other bytes (lora_B scaled by 3)
        weights.write_bytes(bytes(3 * b % 256 for b in range(200)))
    elif damage == "emptied":
        weights.write_bytes(b"")
    elif damage == "removed":
        weights.unlink()
    elif damage == "other_settings":
        (tmp_path / ".started").write_text("fp2\n")
    elif damage == "old_record":  # the records of earlier versions held the counts only
        record.write_text('{"loss": 0.5}')
    else:
        record.unlink()
    with caplog.at_level("WARNING", logger="sipo.stages.sharding"):
        resumable_unit(ctx, "correctness", work, out)
    assert len(calls) == 2
    assert weights.read_bytes() == bytes(range(200))
    lines = [r.getMessage() for r in caplog.records if "does not check out" in r.getMessage()]
    assert len(lines) == 1 and "dpo: correctness" in lines[0], lines
    caplog.clear()
    resumable_unit(ctx, "correctness", work, out)  # the redone unit is recorded again, and kept
    assert len(calls) == 2 and not [r for r in caplog.records if "does not check out" in r.getMessage()]


@pytest.mark.parametrize("damage", ["edited", "truncated", "garbage", "no_record"])
def test_a_kept_shard_that_does_not_check_out_is_redone(tmp_path, one_process, damage, caplog):
    """An edited review shard (same size, other text), a truncated or unreadable one, or one without its record is
    computed again, and the merged rows are those of a clean run."""
    from dataclasses import dataclass

    from sipo.stages.sharding import run_sharded

    @dataclass(frozen=True)
    class Item:
        i: int
        v: str

    (tmp_path / ".started").write_text("fp1\n")

    def work(items):
        return [Item(i, f"review {i}") for i in items]

    clean = run_sharded(tmp_path, list(range(5)), work, record=Item, key=lambda r: r.i, shard_size=2)
    path = tmp_path / "shards" / "size2" / "00001.jsonl"
    text = path.read_text()
    if damage == "edited":
        path.write_text(text.replace("review 2", "INJECTED"[:8]))
    elif damage == "truncated":
        path.write_text(text[: len(text) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\xff\xfe not json")
    else:
        (tmp_path / "shards" / "size2" / "00001.done.json").unlink()
    seen = []

    def recount(items):
        seen.append(list(items))
        return work(items)

    with caplog.at_level("WARNING", logger="sipo.stages.sharding"):
        rows = run_sharded(tmp_path, list(range(5)), recount, record=Item, key=lambda r: r.i, shard_size=2,
                           desc="review")
    assert seen == [[2, 3]]
    assert rows == clean
    lines = [r.getMessage() for r in caplog.records if "does not check out" in r.getMessage()]
    assert len(lines) == 1 and "00001.jsonl" in lines[0], lines


def test_force_clears_a_stage_s_kept_work(tmp_path):
    """--force redoes a stage from nothing: the shards and units a killed run left (even a truncated shard) are
    removed, not just re-checked; without --force, only scratch folders go."""
    from sipo.artifacts import RunDir
    from sipo.pipeline import reset_partial_outputs

    run_dir = RunDir(tmp_path)
    folder = tmp_path / "r1" / "review"
    (folder / "shards" / "size1").mkdir(parents=True)
    (folder / "shards" / "size1" / "00000.jsonl").write_text('{"trunc')
    (folder / ".started").write_text("fp\n")
    (folder / ".model.trainer.x1").mkdir()
    (folder / ".reviews.jsonl.abc.tmp").mkdir()
    reset_partial_outputs(run_dir, "r1/review", "fp")
    assert (folder / "shards" / "size1" / "00000.jsonl").is_file()
    assert sorted(p.name for p in folder.iterdir()) == [".started", "shards"]
    reset_partial_outputs(run_dir, "r1/review", "fp", clear=True)
    assert sorted(p.name for p in folder.iterdir()) == [".started"]


def test_run_sharded_keeps_finished_shards_and_cleans_up(tmp_path, one_process):
    """Items 0..6 in shards of 3: shards 0 and 2 finished before a kill (and a temporary folder left behind by the
    kill) are not recomputed; rows come back sorted by key; finish_shards removes everything."""
    from dataclasses import dataclass

    from sipo.records import write_jsonl
    from sipo.stages.sharding import finish_shards, run_sharded, write_kept_record

    @dataclass(frozen=True)
    class Item:
        i: int
        v: str

    shards = tmp_path / "shards" / "size3"
    shards.mkdir(parents=True)
    write_jsonl(shards / "00000.jsonl", [Item(0, "kept"), Item(1, "kept"), Item(2, "kept")])
    write_jsonl(shards / "00002.jsonl", [Item(6, "kept")])
    for index in ("00000", "00002"):
        write_kept_record(shards / f"{index}.done.json", shards / f"{index}.jsonl", tmp_path, {})
    (shards / ".00001.jsonl.xyz.tmp").mkdir()
    seen = []

    def work(items):
        seen.append(list(items))
        return [Item(i, "new") for i in items]

    rows = run_sharded(tmp_path, list(range(7)), work, record=Item, key=lambda r: -r.i, shard_size=3)
    assert seen == [[3, 4, 5]]
    assert [r.i for r in rows] == [6, 5, 4, 3, 2, 1, 0]
    assert [r.v for r in rows] == ["kept", "new", "new", "new", "kept", "kept", "kept"]
    # Another shard size never reads these shards.
    other = run_sharded(tmp_path, list(range(7)), work, record=Item, key=lambda r: r.i, shard_size=7)
    assert [r.v for r in other] == ["new"] * 7
    finish_shards(tmp_path)
    assert not (tmp_path / "shards").exists()
