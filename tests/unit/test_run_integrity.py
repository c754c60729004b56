"""A run directory that cannot lie (no model; fake stage functions write one small file each):

- the lock: a second run on a directory in use is refused at once, naming the holder; a killed holder frees it;
- content-chained fingerprints: an edited data file, a forced stage, a deleted or altered output re-run exactly the
  stages downstream of it, and every manifest chains to the result its upstream stages hold now;
- a finished run is checked without opening anything for writing; a refused run leaves the directory as it was;
  ``config.yaml`` is written only when it changes;
- validation before any compute: NaN and infinity anywhere, ranges, one objective; non-UTF-8 input named by line
  and byte, a byte-order mark accepted;
- one line and a documented exit code for OS errors, unloadable weights and SIGTERM.
"""

from __future__ import annotations

import builtins
import errno
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from sipo import cli, pipeline
from sipo.artifacts import RunDir
from sipo.configure import load_config
from sipo.errors import ConfigError, DataError, RunDirError
from sipo.pipeline import fingerprint, plan, run_pipeline, stages_to_run
from sipo.runlock import LOCK_NAME, RunLocked, run_lock

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "configs" / "smoke.yaml"
DATA = ROOT / "tests" / "fixtures" / "helpsteer_smoke.jsonl"

ROUND_1 = ["r1/sample", "r1/review", "r1/rewrite", "r1/combine", "r1/filter", "r1/realign"]
ALL = ["prepare", "sft", "dpo", *ROUND_1, "evaluate", "report"]


class FakeStages:
    """Stands in for sipo.stages.*: each stage writes ``out.txt`` (its id and its config's dpo.beta)."""

    def __init__(self, fail_on: str | None = None, error: Exception | None = None):
        self.calls: list[str] = []
        self.fail_on, self.error = fail_on, error

    def __call__(self, name: str):
        def run(ctx: pipeline.StageContext) -> dict:
            if ctx.stage.id == self.fail_on:
                raise self.error or RuntimeError("killed")
            self.calls.append(ctx.stage.id)
            (ctx.out_dir / "out.txt").write_text(f"{ctx.stage.id} {ctx.cfg.dpo.beta}")
            return {"items": len(self.calls)}

        return run


@pytest.fixture
def fake(monkeypatch):
    stages = FakeStages()
    monkeypatch.setattr(pipeline, "stage_function", stages)
    monkeypatch.setattr(pipeline, "_git_sha", lambda: None)
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "SIPO_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    return stages


@pytest.fixture(autouse=True)
def _restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level


@pytest.fixture
def data(tmp_path) -> Path:
    path = tmp_path / "data.jsonl"
    path.write_bytes(DATA.read_bytes())
    return path


def config(run_dir: Path, data: Path, *overrides: str):
    return load_config(SMOKE, [f"run_dir={run_dir}", f"data.path={data}", "model.device=cpu", *overrides])


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under ``root`` (folders included) with its inode, size and modification time."""
    entries = {}
    for path in [root, *root.rglob("*")]:
        st = path.stat()
        entries[str(path.relative_to(root))] = (st.st_ino, st.st_size if path.is_file() else 0, st.st_mtime_ns)
    return entries


def assert_chain_consistent(cfg) -> None:
    """What makes a run directory honest: every stage's manifest holds the fingerprint of the current config and
    inputs, chained to the result ids its upstream manifests hold now, and its recorded outputs are on disk."""
    run_dir = RunDir(cfg.run_dir)
    for stage in plan(cfg):
        manifest = run_dir.read_manifest(stage.id)
        upstream = {u: run_dir.read_manifest(u)["result"] for u in stage.upstream}
        assert manifest["upstream"] == upstream, stage.id
        assert manifest["fingerprint"] == fingerprint(cfg, stage, upstream), stage.id
    assert stages_to_run(cfg, run_dir, plan(cfg)) == []


# --- the lock ---------------------------------------------------------------------------------------------------


def test_a_second_run_is_refused_while_the_lock_is_held(tmp_path, data, fake):
    cfg = config(tmp_path / "run", data)
    (tmp_path / "run").mkdir()
    with run_lock(tmp_path / "run"):
        with pytest.raises(RunLocked, match=rf"another sipo run is writing .* \(pid {os.getpid()} on .*, started "):
            run_pipeline(cfg)
        assert fake.calls == []
        assert not (tmp_path / "run" / "config.yaml").exists()
    run_pipeline(cfg)  # released at the end of the with block
    assert fake.calls == ALL
    info = json.loads((tmp_path / "run" / LOCK_NAME).read_text())
    assert info["pid"] == os.getpid() and info["started"]


def test_the_lock_is_refused_through_the_cli_with_one_line(tmp_path, data, fake, capsys):
    (tmp_path / "run").mkdir()
    with run_lock(tmp_path / "run"):
        code = cli.main(["run", str(SMOKE), f"run_dir={tmp_path / 'run'}", f"data.path={data}", "model.device=cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("sipo: error: ") and f"pid {os.getpid()}" in err[-1]
    assert fake.calls == []


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    """SIGKILL: the kernel drops the flock with the process; the file (and its stale pid) stays, harmlessly."""
    script = (f"import sys, time; sys.path.insert(0, {str(ROOT / 'src')!r}); from sipo.runlock import run_lock\n"
              f"with run_lock({str(tmp_path)!r}):\n    print('locked', flush=True); time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(RunLocked, match=f"pid {proc.pid}"):
            with run_lock(tmp_path):
                pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with run_lock(tmp_path):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()


def test_a_lock_on_a_removed_lock_file_is_taken_again(tmp_path, monkeypatch):
    """A run refused before any stage finished removes the lock file it created. Another process that opened that
    file just before must not count the lock of a file no longer in the directory: it locks the new file."""
    import fcntl

    real_flock, calls = fcntl.flock, []

    def flock_after_removal(fd, op):
        if not calls:  # the file this process opened goes away before it locks it
            (tmp_path / LOCK_NAME).unlink()
        calls.append(fd)
        return real_flock(fd, op)

    monkeypatch.setattr(fcntl, "flock", flock_after_removal)
    with run_lock(tmp_path):
        assert len(calls) == 2
        assert os.stat(tmp_path / LOCK_NAME).st_ino == os.fstat(calls[-1]).st_ino


def test_a_symlinked_lock_file_is_refused_and_never_written_through(tmp_path, data, fake, capsys):
    run = tmp_path / "run"
    run.mkdir()
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    (run / LOCK_NAME).symlink_to(target)
    with pytest.raises(RunDirError, match="symlink"):
        with run_lock(run):
            pass
    code = cli.main(["run", str(SMOKE), f"run_dir={run}", f"data.path={data}", "model.device=cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "symlink" in err[-1] and target.read_text() == "keep me" and fake.calls == []


def test_a_lock_file_deleted_mid_run_stops_the_run_at_the_next_stage(tmp_path, data, monkeypatch, fake):
    """Deleting .sipo.lock would let a second run take a lock of its own: the first run stops at the next stage
    boundary, keeping what it finished."""
    def deleting(name):
        def run(ctx):
            (ctx.out_dir / "out.txt").write_text(ctx.stage.id)
            if ctx.stage.id == "dpo":
                (ctx.run_dir.root / LOCK_NAME).unlink()
            return {}
        return run

    monkeypatch.setattr(pipeline, "stage_function", deleting)
    with pytest.raises(RunLocked, match="deleted or replaced during the run"):
        run_pipeline(config(tmp_path / "run", data))
    assert (tmp_path / "run" / "dpo" / "manifest.json").is_file()
    assert not (tmp_path / "run" / "r1").exists()


def test_sigterm_ends_a_run_with_one_line_and_frees_the_lock(tmp_path):
    """SIGTERM unwinds like Ctrl-C: exit 143, one line, the lock released (a new holder gets it at once)."""
    script = (f"import sys, time; sys.path.insert(0, {str(ROOT / 'src')!r})\n"
              "from sipo import cli\nfrom sipo.runlock import run_lock\n"
              "def slow(args):\n"
              f"    with run_lock({str(tmp_path)!r}):\n        print('locked', flush=True); time.sleep(60)\n"
              "cli._run = slow\nsys.exit(cli.main(['run', 'x']))\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "locked"
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 143, stderr
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith("sipo: terminated (SIGTERM); finished stages are kept")
    with run_lock(tmp_path):
        pass


# --- content-chained fingerprints -------------------------------------------------------------------------------


def test_an_edited_data_file_reruns_everything_that_follows_from_it(tmp_path, data, fake):
    cfg = config(tmp_path / "run", data)
    run_pipeline(cfg)
    fake.calls.clear()
    lines = data.read_text(encoding="utf-8").splitlines()
    row = json.loads(lines[0])
    row["verbosity"] = (row["verbosity"] + 1) % 5  # still a valid row, another score
    data.write_text("\n".join([json.dumps(row), *lines[1:]]) + "\n", encoding="utf-8")
    assert [s.id for s in stages_to_run(cfg, RunDir(cfg.run_dir), plan(cfg))] == ALL
    run_pipeline(cfg)
    assert fake.calls == ALL
    assert_chain_consistent(cfg)


def test_a_deleted_or_altered_output_reruns_its_stage_and_the_later_ones(tmp_path, data, fake):
    cfg = config(tmp_path / "run", data)
    run_pipeline(cfg)
    fake.calls.clear()
    (tmp_path / "run" / "r1" / "review" / "out.txt").unlink()  # the manifest stays
    run_pipeline(cfg)
    assert fake.calls == ALL[ALL.index("r1/review"):]
    fake.calls.clear()
    out = tmp_path / "run" / "r1" / "filter" / "out.txt"
    out.write_text(out.read_text().upper())  # same size, other content
    run_pipeline(cfg)
    assert fake.calls == ALL[ALL.index("r1/filter"):]
    assert_chain_consistent(cfg)


def test_a_manifest_without_recorded_outputs_is_not_trusted(tmp_path, data, fake):
    """A manifest of the older format (fingerprint only) cannot show that its outputs are there."""
    cfg = config(tmp_path / "run", data)
    run_pipeline(cfg)
    fake.calls.clear()
    path = tmp_path / "run" / "evaluate" / "manifest.json"
    manifest = json.loads(path.read_text())
    del manifest["outputs"]
    path.write_text(json.dumps(manifest))
    run_pipeline(cfg)
    assert fake.calls == ["evaluate", "report"]


def test_edits_forced_stages_and_settings_in_turn_keep_the_chain_consistent(tmp_path, data, fake):
    """The directory never holds a stage computed from results other than the ones its upstream stages hold."""
    cfg = config(tmp_path / "run", data)
    run_pipeline(cfg)
    fake.calls.clear()
    run_pipeline(cfg, force=["r1/sample"])
    assert fake.calls == ALL[ALL.index("r1/sample"):]
    fake.calls.clear()
    run_pipeline(cfg, only=["dpo"], force=["dpo"])  # `sipo stage dpo`: what follows is now stale
    assert fake.calls == ["dpo"]
    assert [s.id for s in stages_to_run(cfg, RunDir(cfg.run_dir), plan(cfg))] == ALL[ALL.index("r1/sample"):]
    fake.calls.clear()
    changed = config(tmp_path / "run", data, "dpo.beta=0.5")
    run_pipeline(changed)
    assert fake.calls == ALL[ALL.index("dpo"):]
    assert (tmp_path / "run" / "report" / "out.txt").read_text() == "report 0.5"
    assert_chain_consistent(changed)
    fake.calls.clear()
    run_pipeline(changed)
    assert fake.calls == []


def test_a_local_model_folder_is_hashed_by_content(tmp_path):
    """A local model folder enters the fingerprints of the stages that read it through its files' content."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"x" * 100)
    cfg = load_config(SMOKE, [f"run_dir={tmp_path / 'run'}", f"model.name_or_path={model}", "sft.enabled=false"])
    before = {s.id: fingerprint(cfg, s, {u: "r" for u in s.upstream}) for s in plan(cfg)}
    (model / "model.safetensors").write_bytes(b"y" * 100)
    after = {s.id: fingerprint(cfg, s, {u: "r" for u in s.upstream}) for s in plan(cfg)}
    assert {k for k in before if before[k] != after[k]} == {"dpo", "r1/sample", "r1/review", "r1/rewrite",
                                                             "r1/combine", "r1/filter", "r1/realign", "evaluate"}


def test_an_edited_template_changes_the_stages_that_render_it(tmp_path):
    from sipo.prompting import TEMPLATE_DIR

    template = tmp_path / "review.jinja"
    template.write_text((TEMPLATE_DIR / "review.jinja").read_text(encoding="utf-8"), encoding="utf-8")
    cfg = load_config(SMOKE, ["run_dir=/r", f"review.template={template}"])
    before = {s.id: fingerprint(cfg, s, {u: "r" for u in s.upstream}) for s in plan(cfg)}
    template.write_text(template.read_text(encoding="utf-8") + "\nBe brief.", encoding="utf-8")
    after = {s.id: fingerprint(cfg, s, {u: "r" for u in s.upstream}) for s in plan(cfg)}
    assert {k for k in before if before[k] != after[k]} == {"sft", "r1/review", "r1/rewrite"}


def test_large_files_are_sampled_not_read_whole(tmp_path, monkeypatch):
    from sipo import artifacts

    monkeypatch.setattr(artifacts, "FULL_HASH_LIMIT", 1000)
    monkeypatch.setattr(artifacts, "SAMPLE_BYTES", 10)
    path = tmp_path / "big.bin"
    path.write_bytes(bytes(range(256)) * 40)
    first = artifacts.content_hash(path)
    data = bytearray(path.read_bytes())
    data[5] ^= 1  # inside the first window
    path.write_bytes(bytes(data))
    assert artifacts.content_hash(path) != first
    data[5] ^= 1
    data[3000] ^= 1  # outside every window: the documented blind spot
    path.write_bytes(bytes(data))
    assert artifacts.content_hash(path) == first


# --- what a run writes ------------------------------------------------------------------------------------------


def test_a_finished_run_is_checked_without_writing_anything(tmp_path, data, fake, monkeypatch, capsys):
    """As on read-only storage: the finished run is skipped, exit 0, and nothing under it is opened for writing
    (root ignores chmod, so the test refuses writes itself and compares inodes, sizes and mtimes)."""
    run = tmp_path / "run"
    run_pipeline(config(run, data))
    fake.calls.clear()
    before = snapshot(run)
    real_open, real_os_open = builtins.open, os.open

    def guarded_open(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, Path)) and str(Path(file).resolve()).startswith(str(run)) \
                and any(c in mode for c in "wax+"):
            raise PermissionError(errno.EROFS, "Read-only file system", str(file))
        return real_open(file, mode, *args, **kwargs)

    def guarded_os_open(path, flags, *args, **kwargs):
        if str(Path(path).resolve()).startswith(str(run)) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise PermissionError(errno.EROFS, "Read-only file system", str(path))
        return real_os_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded_open)
    monkeypatch.setattr(os, "open", guarded_os_open)
    code = cli.main(["run", str(SMOKE), f"run_dir={run}", f"data.path={data}", "model.device=cpu"])
    assert code == 0, capsys.readouterr().err
    assert "0 stage(s) ran, 11 skipped" in capsys.readouterr().err
    assert fake.calls == []
    assert snapshot(run) == before
    # A stage to run on read-only storage: one line, the environment's exit code (4), naming the path.
    code = cli.main(["run", str(SMOKE), f"run_dir={run}", f"data.path={data}", "model.device=cpu",
                     "eval.reference_point=[0,0]"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 4 and err[-1] == f"sipo: error: {run / LOCK_NAME}: Read-only file system"
    assert snapshot(run) == before


def test_config_yaml_is_written_only_when_it_changes(tmp_path, data, fake):
    run = tmp_path / "run"
    run_pipeline(config(run, data))
    saved = (run / "config.yaml").stat()
    run_pipeline(config(run, data), force=["report"])
    assert (run / "config.yaml").stat().st_mtime_ns == saved.st_mtime_ns
    assert (run / "config.yaml").stat().st_ino == saved.st_ino
    run_pipeline(config(run, data, "eval.reference_point=[0,0]"))
    assert "reference_point:\n  - 0.0" in (run / "config.yaml").read_text()


def test_refused_data_leaves_an_existing_run_directory_as_it_was(tmp_path, data, fake):
    run = tmp_path / "run"
    run_pipeline(config(run, data))
    fake.calls.clear()
    before = snapshot(run)
    data.write_text(data.read_text() + '{"prompt": "x", "response": "y"}\n')
    with pytest.raises(DataError, match=r"data\.jsonl:\d+: missing column"):
        run_pipeline(config(run, data))
    assert fake.calls == [] and snapshot(run) == before


def test_a_stage_refusing_the_run_takes_back_what_it_wrote(tmp_path, data, monkeypatch, fake):
    """A mistake only a stage can see (e.g. every SFT prompt too long): in a new run refused by its first stage the
    directory goes; refused later, the finished stages are kept and the refusing stage's new folder goes."""
    monkeypatch.setattr(pipeline, "stage_function", FakeStages("prepare", ConfigError("config key 'x': bad")))
    with pytest.raises(ConfigError):
        run_pipeline(config(tmp_path / "run", data))
    assert not (tmp_path / "run").exists()
    monkeypatch.setattr(pipeline, "stage_function", FakeStages("r1/sample", ConfigError("config key 'x': bad")))
    with pytest.raises(ConfigError):
        run_pipeline(config(tmp_path / "run", data))
    assert (tmp_path / "run" / "dpo" / "manifest.json").is_file()
    assert not (tmp_path / "run" / "r1").exists()


def test_a_run_refused_for_a_folder_it_may_not_write_keeps_the_old_config(tmp_path, data, monkeypatch, fake, capsys):
    """The write-access check comes before config.yaml is written: a refused run (exit 4) leaves the settings of
    the finished stages in config.yaml, so that later readers (generate, report) never see the refused ones."""
    run = tmp_path / "run"
    run_pipeline(config(run, data))
    fake.calls.clear()
    before = snapshot(run)
    report = run / "report"
    monkeypatch.setattr(pipeline, "_writable", lambda path: Path(path) != report)
    code = cli.main(["run", str(SMOKE), f"run_dir={run}", f"data.path={data}", "model.device=cpu",
                     "eval.reference_point=[-9,-9]"])
    assert code == 4
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"sipo: error: {report}: Permission denied"
    assert fake.calls == []
    after = snapshot(run)
    for name in ("run.log", LOCK_NAME):  # the log of the refused command; the lock it took (holder's pid)
        after.pop(name, None), before.pop(name, None)
    assert after == before


def test_a_stage_stopped_by_the_environment_gives_config_yaml_back(tmp_path, data, monkeypatch, fake):
    """No stage finished under the new settings: config.yaml goes back to the old ones; the stage's partial work
    stays for the next attempt."""
    run = tmp_path / "run"
    run_pipeline(config(run, data))
    old = (run / "config.yaml").read_bytes()

    def fail(name):
        def stage(ctx):
            (ctx.out_dir / "partial.txt").write_text("shard")
            raise OSError(errno.ENOSPC, "No space left on device", str(ctx.out_dir / "partial.txt"))
        return stage

    monkeypatch.setattr(pipeline, "stage_function", fail)
    with pytest.raises(OSError):
        run_pipeline(config(run, data, "eval.reference_point=[-9,-9]"))
    assert (run / "config.yaml").read_bytes() == old
    assert (run / "report" / "partial.txt").is_file()


def test_a_refused_run_does_not_pin_the_directory(tmp_path, data, fake):
    """No stage finished, so another config (other objectives) may use the directory afterwards."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    (run / "notes.txt").write_text("mine")
    data.write_text(data.read_text() + "{}\n")
    with pytest.raises(DataError, match="missing column"):
        run_pipeline(config(run, data))
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"]
    data.write_bytes(DATA.read_bytes())
    cfg = config(run, data)
    cfg.objectives, cfg.objective_descriptions = ["correctness", "coherence"], {}
    run_pipeline(cfg)
    assert fake.calls == ALL


def test_run_dir_under_a_file(tmp_path, data, fake, capsys):
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunDirError, match="lies under the file"):
        run_pipeline(config(tmp_path / "file" / "run", data), dry_run=True)
    code = cli.main(["run", str(SMOKE), f"run_dir={tmp_path / 'file' / 'run'}", f"data.path={data}"])
    assert code == 2 and "lies under the file" in capsys.readouterr().err


# --- validation -------------------------------------------------------------------------------------------------


NON_FINITE = ["dpo.beta=nan", "dpo.train.learning_rate=inf", "realign.alpha=nan", "eval.reference_point=[nan,nan]",
              "sample.decode.temperature=nan", "data.conflict_fraction=nan", "eval.reward_model.shift=-inf",
              "sft.train.epochs=inf", "realign.beta=nan", "dpo.lora.dropout=nan", "sample.grid.explicit=[[nan,1]]"]


@pytest.mark.parametrize("override", NON_FINITE)
def test_nan_and_infinity_are_refused_naming_the_key(override, capsys, tmp_path):
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"config key '{key}(\[\d+\])*': must be a finite number"):
        load_config(SMOKE, ["run_dir=/r", override])
    assert cli.main(["run", str(SMOKE), f"run_dir={tmp_path / 'r'}", override, "--dry-run"]) == 2
    assert f"config key '{key}" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


OUT_OF_RANGE = [
    ("seed=-1", "seed"), ("seed=4294967296", "seed"), ("dpo.lora.r=0", "dpo.lora.r"),
    ("dpo.lora.alpha=0", "dpo.lora.alpha"), ("dpo.lora.dropout=1.0", "dpo.lora.dropout"),
    ("model.max_response_tokens=0", "model.max_response_tokens"), ("model.max_prompt_tokens=0", "model.max_prompt_tokens"),
    ("dpo.train.epochs=0", "dpo.train.epochs"), ("realign.train.max_steps=0", "realign.train.max_steps"),
    ("sft.train.gradient_accumulation_steps=0", "sft.train.gradient_accumulation_steps"),
    ("dpo.train.warmup_ratio=1.5", "dpo.train.warmup_ratio"), ("dpo.train.weight_decay=-1", "dpo.train.weight_decay"),
    ("dpo.train.learning_rate=0", "dpo.train.learning_rate"), ("data.max_test_prompts=0", "data.max_test_prompts"),
    ("data.max_conflict_prompts=-3", "data.max_conflict_prompts"), ("model.random.hidden_size=30", "model.random.hidden_size"),
    ("model.random.num_key_value_heads=3", "model.random.num_key_value_heads"),
    ("model.random.num_hidden_layers=0", "model.random.num_hidden_layers"),
    ("data.synthetic.responses_per_prompt=1", "data.synthetic.responses_per_prompt"),
    ("eval.reward_model.batch_size=0", "eval.reward_model.batch_size"), ("sample.decode.top_p=0", "sample.decode.top_p"),
    ("eval.decode.temperature=-1", "eval.decode.temperature"), ("realign.alpha=-0.1", "realign.alpha"),
]


@pytest.mark.parametrize(("override", "key"), OUT_OF_RANGE, ids=[o for o, _ in OUT_OF_RANGE])
def test_out_of_range_values_are_refused_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=rf"config key '{key}'"):
        load_config(SMOKE, ["run_dir=/r", override])


def test_one_objective_needs_to_be_asked_for(tmp_path):
    with pytest.raises(ConfigError, match=r"config key 'objectives': has one objective \(correctness\).*"
                                          r"allow_single_objective=true"):
        load_config(SMOKE, ["run_dir=/r", "objectives=[correctness]", "objective_descriptions={}"])
    cfg = load_config(None, ["run_dir=/r", "objectives=[correctness]", "allow_single_objective=true",
                             "model.name_or_path=random", "data.path=x.jsonl"])
    assert cfg.objectives == ["correctness"]


# --- text encodings ---------------------------------------------------------------------------------------------


def test_a_non_utf8_byte_is_named_with_its_line(tmp_path):
    from sipo.records import iter_json_lines

    path = tmp_path / "data.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": 2}\n{"prompt": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"data\.jsonl:3: not UTF-8 text \(byte 0xe9 at column 16"):
        list(iter_json_lines(path))


def test_a_byte_order_mark_is_accepted(tmp_path, data):
    from sipo.data import load_pairs

    with_bom = tmp_path / "bom.jsonl"
    with_bom.write_bytes(b"\xef\xbb\xbf" + data.read_bytes())
    cfg = config(tmp_path / "run", with_bom)
    assert [p.pair_id for p in load_pairs(cfg)] == [p.pair_id for p in load_pairs(config(tmp_path / "run", data))]
    preset = tmp_path / "preset.yaml"
    preset.write_bytes(b"\xef\xbb\xbf" + SMOKE.read_bytes())
    assert load_config(preset, ["run_dir=/r"]).objectives == ["correctness", "verbosity"]
    preset.write_bytes(SMOKE.read_bytes().replace(b"seed: 0", b"seed: 0 # \xff"))
    with pytest.raises(ConfigError, match=r"preset\.yaml:5: not UTF-8 text \(byte 0xff at column 11\)"):
        load_config(preset, ["run_dir=/r"])


def test_a_non_utf8_template_is_named_with_its_line(tmp_path, capsys):
    template = tmp_path / "review.jinja"
    template.write_bytes(b"Review this.\n{{ prompt }} \xe9t\xe9\n")
    assert cli.main(["run", str(SMOKE), f"run_dir={tmp_path / 'run'}", f"review.template={template}",
                     "--dry-run"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        f"sipo: error: {template}:2: not UTF-8 text (byte 0xe9 at column 14)"
    assert not (tmp_path / "run").exists()


# --- one line for OS and weight-loading errors ------------------------------------------------------------------


@pytest.mark.parametrize(("error", "code"), [
    (OSError(errno.ENOSPC, "No space left on device", "/runs/x/dpo/adapter.safetensors"), 4),
    (PermissionError(errno.EACCES, "Permission denied", "/runs/x"), 4),
    (OSError(errno.EROFS, "Read-only file system", "/runs/x/.sipo.lock"), 4),
    (NotADirectoryError(errno.ENOTDIR, "Not a directory", "/runs/file/x"), 2),
    (MemoryError(), 4),
])
def test_os_errors_end_with_one_line_and_their_exit_code(error, code, monkeypatch, capsys):
    def fail(args):
        raise error

    monkeypatch.setattr(cli, "_run", fail)
    assert cli.main(["report", "x"]) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    if isinstance(error, OSError):
        assert err.strip() == f"sipo: error: {error.filename}: {error.strerror}"


def test_a_write_error_without_a_path_names_the_stage_folder(tmp_path, data, monkeypatch, fake, capsys):
    monkeypatch.setattr(pipeline, "stage_function",
                        FakeStages("r1/sample", OSError(errno.ENOSPC, "No space left on device")))
    code = cli.main(["run", str(SMOKE), f"run_dir={tmp_path / 'run'}", f"data.path={data}", "model.device=cpu"])
    assert code == 4
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        f"sipo: error: {tmp_path / 'run' / 'r1' / 'sample'}: No space left on device"
    assert (tmp_path / "run" / "dpo" / "manifest.json").is_file()  # finished stages are kept


def test_a_safetensors_write_error_is_one_line_naming_the_stage_folder(tmp_path, data, monkeypatch, fake, capsys):
    """safetensors raises its own error, from Rust, without a path: the disk-full one becomes exit 4."""
    from safetensors import SafetensorError

    full = SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space '
                           'left on device" })')
    monkeypatch.setattr(pipeline, "stage_function", FakeStages("dpo", full))
    code = cli.main(["run", str(SMOKE), f"run_dir={tmp_path / 'run'}", f"data.path={data}", "model.device=cpu"])
    assert code == 4
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        f"sipo: error: {tmp_path / 'run' / 'dpo'}: No space left on device"


@pytest.mark.parametrize("message", [
    "Error while serializing: I/O error: File too large (os error 27)",
    "Error while serializing: I/O error: No space left on device (os error 28)",
])
def test_a_full_disk_or_file_size_limit_in_a_safetensors_write_exits_4(tmp_path, data, monkeypatch, fake, capsys,
                                                                      message):
    """safetensors' newer message format ("(os error 27)") is an environment error too, in a stage or not."""
    from safetensors import SafetensorError

    monkeypatch.setattr(pipeline, "stage_function", FakeStages("dpo", SafetensorError(message)))
    code = cli.main(["run", str(SMOKE), f"run_dir={tmp_path / 'run'}", f"data.path={data}", "model.device=cpu"])
    assert code == 4
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(f"sipo: error: {tmp_path / 'run' / 'dpo'}: ")

    def fail(args):
        raise SafetensorError(message)

    monkeypatch.setattr(cli, "_run", fail)
    assert cli.main(["report", "x"]) == 4


def test_ctrl_c_outside_a_run_does_not_speak_of_finished_stages(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_run", interrupted)
    assert cli.main(["generate", "x", "hello"]) == 130
    assert capsys.readouterr().err.strip() == "sipo: interrupted"
    assert cli.main(["run", str(SMOKE)]) == 130
    assert "finished stages are kept" in capsys.readouterr().err


def test_an_output_row_holding_nan_is_refused_naming_the_row(tmp_path):
    """NaN that a diverged model produced is stopped at the stage that made it, not hours later at the report."""
    from sipo.records import write_jsonl

    path = tmp_path / "combined.jsonl"
    with pytest.raises(DataError, match=r"combined\.jsonl:2: this output would hold NaN or infinity"):
        write_jsonl(path, [{"score": 1.0}, {"score": float("nan")}])
    assert not path.exists()
    assert write_jsonl(path, [{"score": 1.0}]) == 1


def test_a_full_disk_while_writing_a_file_names_the_file(tmp_path):
    from sipo.artifacts import atomic_path, atomic_write_text

    target = tmp_path / "config.yaml"
    with pytest.raises(OSError) as caught:
        with atomic_path(target) as tmp:
            tmp.write_text("x")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert caught.value.filename == str(target) and not target.exists()
    atomic_write_text(target, "ok")
    assert target.read_text() == "ok"


def test_unloadable_weights_are_one_config_error(tmp_path):
    """A truncated safetensors file, in the inference path and the training path alike."""
    from sipo.config import ModelConfig
    from sipo.models.loading import build_random_model, load_model, model_load_errors

    cfg = load_config(SMOKE, ["run_dir=/r"])
    folder = tmp_path / "model"
    build_random_model(cfg.model.random, ["a few words"], folder, seed=0)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ConfigError, match=rf"cannot load the model weights in '{folder}'"):
        load_model(folder, ModelConfig(name_or_path=str(folder)), "cpu")
    from transformers import AutoModelForCausalLM

    with pytest.raises(ConfigError, match=rf"cannot load the model weights in '{folder}'"):
        with model_load_errors(folder):
            AutoModelForCausalLM.from_pretrained(str(folder), use_safetensors=True)
    weights.unlink()
    (folder / "pytorch_model.bin").write_bytes(b"pickle")
    (folder / "unrelated.safetensors").write_bytes(b"")
    with pytest.raises(ConfigError, match=rf"cannot load the model weights in '{folder}'"):
        with model_load_errors(folder):
            AutoModelForCausalLM.from_pretrained(str(folder), use_safetensors=True)


def test_the_lock_is_not_taken_by_dry_runs(tmp_path, data, fake):
    run = tmp_path / "run"
    run.mkdir()
    with run_lock(run):
        assert [r["status"] for r in run_pipeline(config(run, data), dry_run=True)][0] == "planned"


# --- commands that read a run -------------------------------------------------------------------------------


def test_readers_refuse_a_run_whose_stages_do_not_check_out(tmp_path, data, fake, caplog):
    """generate, export, compare and report read a run only when each stage they read is finished, under the
    fingerprint config.yaml gives it, with its recorded outputs; else one line names the stage and the command
    that completes it. --allow-stale lets it through and returns the line for the output."""
    from sipo.pipeline import check_before_reading, stale_stages

    run = tmp_path / "run"
    cfg = config(run, data)
    run_pipeline(cfg)
    run_dir = RunDir(run)
    assert stale_stages(cfg, run_dir, ["evaluate", "report"]) == []
    assert check_before_reading(cfg, run_dir, ["r1/realign"], "generate") is None
    (run / "dpo" / "out.txt").write_text("dpo 0.1 altered")
    with pytest.raises(RunDirError) as refused:
        check_before_reading(cfg, run_dir, ["r1/realign"], "generate")
    line = str(refused.value)
    assert "stage dpo " in line and "missing or changed" in line and str(run / "dpo" / "out.txt") in line
    assert f"sipo run {run / 'config.yaml'} run_dir={run}" in line and "--allow-stale" in line
    assert stale_stages(cfg, run_dir, ["prepare"]) == []  # stages upstream of the altered one are fine
    with caplog.at_level(logging.WARNING, logger="sipo.pipeline"):
        note = check_before_reading(cfg, run_dir, ["r1/realign"], "generate", allow_stale=True)
    assert note.startswith("stale run (--allow-stale): stage dpo ") and "--allow-stale" in caplog.text


def test_readers_refuse_a_run_killed_halfway_through_a_rerun(tmp_path, data, monkeypatch, fake):
    """The run re-ran prepare..r1/rewrite with a new dpo.beta and was killed: config.yaml holds the new settings,
    r1/combine onwards are still the old run's. A reader of r1/realign or evaluate is refused at r1/combine."""
    from sipo.api import open_run_config
    from sipo.pipeline import stale_stages

    run = tmp_path / "run"
    run_pipeline(config(run, data))
    monkeypatch.setattr(pipeline, "stage_function", FakeStages("r1/combine"))
    with pytest.raises(RuntimeError):
        run_pipeline(config(run, data, "dpo.beta=0.3"))
    saved = open_run_config(run)
    assert saved.dpo.beta == 0.3
    problems = stale_stages(saved, RunDir(run), ["evaluate"])
    assert problems[0] == ("r1/combine", "is not finished")
    assert stale_stages(saved, RunDir(run), ["dpo"]) == []


def test_sipo_report_refuses_a_stale_run_in_one_line(tmp_path, data, fake, capsys):
    run = tmp_path / "run"
    run_pipeline(config(run, data))
    (run / "evaluate" / "out.txt").write_text("edited")
    before = snapshot(run)
    code = cli.main(["report", str(run)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "report: stage evaluate of the run" in err[0] and "sipo run" in err[0]
    assert snapshot(run) == before


@pytest.mark.parametrize("content", ['"x"', "[1, 2]", '{"fingerprint": 1, "outputs": {"out.txt": 123}, '
                                                      '"result": "r"}'])
def test_a_damaged_manifest_means_an_unfinished_stage_not_a_traceback(tmp_path, data, fake, content, capsys):
    run = tmp_path / "run"
    cfg = config(run, data)
    run_pipeline(cfg)
    (run / "r1" / "filter" / "manifest.json").write_text(content)
    assert cli.main(["run", str(SMOKE), f"run_dir={run}", f"data.path={data}", "model.device=cpu",
                     "--dry-run"]) == 0
    assert "Traceback" not in capsys.readouterr().err
    fake.calls.clear()
    run_pipeline(cfg)
    assert fake.calls == ["r1/filter", "r1/realign", "evaluate", "report"]


def test_cuda_is_refused_where_there_is_none_under_dry_run_too(tmp_path, data, monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code = cli.main(["run", str(SMOKE), f"run_dir={tmp_path / 'run'}", f"data.path={data}", "model.device=cuda",
                     "--dry-run"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1] == ("sipo: error: config key 'model.device': cuda requested but no CUDA device "
                                     "is available") and "Traceback" not in "\n".join(err)
    assert not (tmp_path / "run").exists()


def test_duplicate_methods_and_duplicate_yaml_keys_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="config key 'methods': 'sipo' is listed twice"):
        load_config(SMOKE, [f"run_dir={tmp_path}", "methods=[sipo,sipo,mod]"])
    preset = tmp_path / "twice.yaml"
    preset.write_text(f"base: {SMOKE}\ndpo:\n  beta: 0.1\n  beta: 0.5\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"twice\.yaml:4: not valid YAML \(duplicate key 'beta'\)"):
        load_config(preset, [f"run_dir={tmp_path}"])


def test_a_run_dir_that_is_a_dangling_symlink_is_named_as_one(tmp_path, data):
    (tmp_path / "run").symlink_to(tmp_path / "nowhere")
    with pytest.raises(RunDirError, match="is a symlink to nothing, not a folder"):
        run_pipeline(config(tmp_path / "run", data), dry_run=True)


def test_generate_s_device_is_checked_in_one_line(monkeypatch):
    import torch

    from sipo.config import check_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="--device: 'foo' is not a device \\(choose from auto, cpu, cuda\\)"):
        check_device("foo")
    with pytest.raises(ConfigError, match="--device: cuda requested but no CUDA device is available"):
        check_device("cuda")
    assert check_device("auto") == check_device("cpu") == "cpu"
