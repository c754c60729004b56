"""Bad input through the command line (``sipo.cli.main``, in process): one line on stderr naming the file and
line or the config key, exit code 2, no traceback (unless ``--debug``), and nothing half-written in the run
directory. Also the untrusted-files rules: no remote code by default, no pickle weights, no data in file paths.

Every case fails before a model is built (in ``prepare`` or in the checks that run before it), so no test here
trains or decodes anything.
"""

from __future__ import annotations

import ast
import json
import logging
from pathlib import Path

import pytest
import yaml

from sipo import cli
from sipo.errors import ConfigError, DataError, SipoError

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "configs" / "smoke.yaml"
HELPSTEER = ROOT / "tests" / "fixtures" / "helpsteer_sample.jsonl"
SRC = ROOT / "src" / "sipo"


@pytest.fixture(autouse=True)
def _restore_logging(monkeypatch):
    """cli.main installs a stderr handler on the root logger; put the previous ones back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    monkeypatch.delenv("SIPO_DEBUG", raising=False)
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    yield
    root.handlers[:], root.level = handlers, level


def sipo(capsys, *args: str) -> tuple[int, str]:
    """Run the CLI in process; returns (exit code, the error line)."""
    code = cli.main(list(args))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("sipo: error:")]
    assert len(errors) == 1, err
    assert err.rstrip("\n").splitlines()[-1] == errors[0], "the error must be the last line"
    return code, errors[0]


def files_under(run_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file()) if run_dir.exists() else []


def assert_nothing_half_written(run_dir: Path) -> None:
    """Refused data is found before anything is written: a new run directory is not even created."""
    assert not run_dir.exists(), files_under(run_dir)


def helpsteer_with(tmp_path: Path, bad_line: str, at: int = 3) -> Path:
    """The first 6 fixture rows with ``bad_line`` inserted as line ``at``."""
    lines = HELPSTEER.read_text(encoding="utf-8").splitlines()[:6]
    lines.insert(at - 1, bad_line)
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def row(**changes) -> str:
    base = {"prompt": "Name a colour.", "response": "Blue.", "helpfulness": 3, "correctness": 4, "coherence": 4,
            "complexity": 1, "verbosity": 1}
    base.update(changes)
    return json.dumps({k: v for k, v in base.items() if v is not None})


BAD_ROWS = [
    # (id, line 3 of the data file, what the message says)
    ("malformed-json", '{"prompt": "Name a colour.", "response": "Blue."', "malformed JSON"),
    ("not-an-object", "[1, 2, 3]", "expected a JSON object"),
    ("missing-column", row(verbosity=None), "missing column 'verbosity'"),
    ("misspelled-column", row(response=None).replace('"prompt"', '"respons": "Blue.", "prompt"'),
     "missing column 'response' (did you mean 'respons'?)"),
    ("score-wrong-type", row(correctness="4"), "score column 'correctness' must be a number, got a string"),
    ("score-boolean", row(verbosity=True), "score column 'verbosity' must be a number, got a boolean"),
    ("score-out-of-range", row(correctness=7), "score column 'correctness' = 7 is out of range [0, 4]"),
    ("score-not-finite", row().replace('"correctness": 4', '"correctness": NaN'), "must be a finite number"),
    ("empty-prompt", row(prompt="  "), "column 'prompt' is empty"),
    ("empty-response", row(response=""), "column 'response' is empty"),
    ("huge-integer", row().replace('"verbosity": 1', '"verbosity": ' + "9" * 5000), "malformed JSON"),
    ("deep-nesting", '{"prompt": ' + "[" * 100_000 + "]" * 100_000 + "}", "malformed JSON (nested too deeply)"),
]


@pytest.mark.parametrize(("line", "fragment"), [case[1:] for case in BAD_ROWS], ids=[case[0] for case in BAD_ROWS])
def test_bad_data_row(tmp_path, capsys, line, fragment):
    data = helpsteer_with(tmp_path, line)
    run_dir = tmp_path / "run"
    code, error = sipo(capsys, "run", str(SMOKE), f"run_dir={run_dir}", f"data.path={data}", "data.on_bad_row=refuse")
    assert code == 2
    assert error.startswith(f"sipo: error: {data}:3: "), error
    assert fragment in error
    assert_nothing_half_written(run_dir)


def smoke_config(tmp_path: Path, **changes) -> Path:
    """configs/smoke.yaml with top-level keys replaced (a dotted override cannot remove a dict key)."""
    cfg = yaml.safe_load(SMOKE.read_text())
    cfg.update(changes)
    cfg["data"]["path"] = str(HELPSTEER)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


# Mistakes found before anything is written: the run directory is not even created.
EARLY = [
    ("unknown-objective", {"objectives": ["correctness", "kindness"], "objective_descriptions": {}}, [],
     "config key 'objectives': 'kindness' is not a HelpSteer score column"),
    ("weights-do-not-sum-to-1", {}, ["sample.grid.explicit=[[0.3,0.3]]"],
     "config key 'sample.grid.explicit[0]': weights must sum to 1 (they sum to 0.6)"),
    ("eval-weights-negative", {}, ["eval.grid.explicit=[[1.5,-0.5]]"],
     "config key 'eval.grid.explicit[0]': weights must be non-negative"),
    ("weights-wrong-length", {}, ["sample.grid.explicit=[[1.0]]"], "has 1 weights for 2 objectives"),
    ("missing-data-file", {}, ["data.path=/nonexistent/data.jsonl"],
     "/nonexistent/data.jsonl: no such file or folder (data.path)"),
    ("missing-model-folder", {}, ["model.name_or_path=/nonexistent/model"],
     "config key 'model.name_or_path': model folder '/nonexistent/model' does not exist"),
    ("misspelled-key", {}, ["dpo.bta=0.2"], "'dpo.bta'"),
    ("unknown-method", {}, ["methods=[sipo,rlhf]"], "config key 'methods': unknown method 'rlhf'"),
    ("missing-template", {}, ["review.template=/nonexistent/review.jinja"],
     "prompt template not found: /nonexistent/review.jinja"),
]


@pytest.mark.parametrize(("changes", "overrides", "fragment"), [c[1:] for c in EARLY], ids=[c[0] for c in EARLY])
def test_mistake_found_before_any_work(tmp_path, capsys, changes, overrides, fragment):
    config = smoke_config(tmp_path, **changes)
    run_dir = tmp_path / "run"
    code, error = sipo(capsys, "run", str(config), f"run_dir={run_dir}", *overrides)
    assert code == 2
    assert fragment in error, error
    assert not run_dir.exists(), "a config that fails its checks must not be saved"


def test_pickle_only_model_folder_is_refused(tmp_path, capsys):
    """A model folder with only pickle weights (which run code when loaded) is refused unless model.allow_pickle;
    the file is never opened (it is not even a valid pickle here)."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "pytorch_model.bin").write_bytes(b"not a pickle")
    code, error = sipo(capsys, "run", str(SMOKE), f"run_dir={tmp_path / 'run'}", f"model.name_or_path={model}")
    assert code == 2
    assert "config key 'model.allow_pickle'" in error and "pickle" in error
    assert not (tmp_path / "run").exists()


def test_yaml_syntax_error_names_the_line(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("run_dir: x\nobjectives: [a, b\nseed: 0\n")
    code, error = sipo(capsys, "run", str(config))
    assert code == 2
    assert f"{config}:" in error and "not valid YAML" in error


def test_missing_config_file(tmp_path, capsys):
    code, error = sipo(capsys, "run", str(tmp_path / "nope.yaml"))
    assert code == 2 and "config file not found" in error


def test_run_directory_of_an_incompatible_config(tmp_path, capsys):
    """A run directory whose prepare stage finished with other objectives is refused, and its config.yaml is kept."""
    run_dir = tmp_path / "run"
    assert cli.main(["stage", "prepare", str(SMOKE), f"run_dir={run_dir}", "model.device=cpu"]) == 0
    capsys.readouterr()
    saved = (run_dir / "config.yaml").read_bytes()
    before = files_under(run_dir)
    other = smoke_config(tmp_path, objectives=["correctness", "coherence"], objective_descriptions={})
    code, error = sipo(capsys, "run", str(other), f"run_dir={run_dir}")
    assert code == 2
    assert error == (f"sipo: error: {run_dir / 'config.yaml'}: run directory was written with "
                     "objectives=['correctness', 'verbosity'], not ['correctness', 'coherence']; use a fresh run_dir")
    assert (run_dir / "config.yaml").read_bytes() == saved
    assert files_under(run_dir) == before


def test_run_dir_that_is_a_file(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("x")
    code, error = sipo(capsys, "run", str(SMOKE), f"run_dir={target}")
    assert code == 2 and "is a file, not a folder" in error


def test_debug_shows_the_traceback(tmp_path, capsys):
    data = helpsteer_with(tmp_path, "{oops")
    with pytest.raises(DataError, match=r":3: malformed JSON"):
        cli.main(["--debug", "run", str(SMOKE), f"run_dir={tmp_path / 'run'}", f"data.path={data}"])
    with pytest.raises(ConfigError):
        cli.main(["run", str(SMOKE), "dpo.bta=0.2", "--debug"])


def test_every_user_error_is_a_sipo_error():
    assert issubclass(DataError, SipoError) and issubclass(ConfigError, SipoError)


# --- prompts over model.max_prompt_tokens ---------------------------------------------------------------------


def test_prompts_that_fit_drops_and_counts():
    """Byte tokenizer, plain template: a prompt of n ASCII characters takes 1 (BOS) + 44 (``BEGINNING OF
    CONVERSATION: USER: `` is 33 characters, `` ASSISTANT:`` 11) + n tokens, so with a limit of 55 a 10-character
    prompt fits (55 tokens) and an 11-character one does not (56)."""
    from sipo.configure import load_config
    from sipo.models.loading import build_tokenizer
    from sipo.stages.model_calls import prompts_that_fit

    cfg = load_config(SMOKE, ["run_dir=/unused", "model.max_prompt_tokens=55", "model.prompt_template=plain"])
    tokenizer = build_tokenizer("byte")
    items = ["a" * 10, "b" * 11, "c" * 3, "a" * 10, "d" * 200]
    kept, dropped = prompts_that_fit(tokenizer, items, lambda p: p, cfg, "test")
    assert kept == ["a" * 10, "c" * 3, "a" * 10]
    assert dropped == 2


# --- untrusted files ------------------------------------------------------------------------------------------


def test_remote_code_and_pickle_are_off_by_default():
    from sipo.configure import load_config

    cfg = load_config(SMOKE, ["run_dir=/unused"])
    assert cfg.model.trust_remote_code is False and cfg.model.allow_pickle is False


def from_pretrained_calls() -> list[tuple[str, int, set[str]]]:
    calls = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                    node.func.attr == "from_pretrained":
                owner = ast.unparse(node.func.value)
                calls.append((f"{path.relative_to(SRC)}:{node.lineno} {owner}", node.lineno,
                              {k.arg for k in node.keywords if k.arg}))
    return calls


def test_every_from_pretrained_call_decides_remote_code_and_pickle():
    """Every model/tokenizer/config load passes trust_remote_code (from model.trust_remote_code, off by default),
    and every model-weights load passes use_safetensors. Exceptions: peft adapters (PeftModel: weights only, and
    their folders are checked to hold safetensors) and the GGUF conversion of the smollm2 package (a GGUF file is
    data, and transformers runs no remote code for it)."""
    calls = from_pretrained_calls()
    assert len(calls) >= 8
    for where, _, keywords in calls:
        if "PeftModel" in where or "gguf_file" in keywords:
            continue
        assert "trust_remote_code" in keywords, f"{where} does not pass trust_remote_code"
        if "Tokenizer" not in where and "AutoConfig" not in where:
            assert "use_safetensors" in keywords, f"{where} does not pass use_safetensors"


def test_adapter_without_safetensors_is_refused(tmp_path):
    from sipo.models.loading import check_adapter_weights

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    with pytest.raises(ConfigError, match="no adapter_config.json"):
        check_adapter_weights(adapter)
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.bin").write_bytes(b"pickle")
    with pytest.raises(ConfigError, match="no adapter_model.safetensors"):
        check_adapter_weights(adapter)
    (adapter / "adapter_model.safetensors").write_bytes(b"")
    assert check_adapter_weights(adapter) == adapter


def test_no_data_field_becomes_a_path(tmp_path, capsys):
    """Prompts and responses that look like paths end up only inside JSONL files: every file of the prepare
    stage has a fixed name (objectives are checked to be letters, digits, '_' and '-')."""
    lines = []
    for prompt in ("../../escape", "/tmp/abs", "a/b\\c", "con:nul"):
        for response, score in (("../x", 4), ("y/../../z", 0)):
            lines.append(row(prompt=prompt, response=response, correctness=score, verbosity=4 - score))
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(lines) + "\n")
    run_dir = tmp_path / "run"
    assert cli.main(["stage", "prepare", str(SMOKE), f"run_dir={run_dir}", f"data.path={data}",
                     "data.test_fraction=0.25", "model.device=cpu"]) == 0
    names = {p.name for p in run_dir.rglob("*")}
    assert names <= {"config.yaml", "run.log", ".sipo.lock", "prepare", ".started", "manifest.json", "counts.json",
                     "sft.jsonl", "train_correctness.jsonl", "train_verbosity.jsonl", "train_conflict.jsonl", "validation.jsonl",
                     "test_prompts.jsonl"}, names
    assert not (tmp_path / "escape").exists() and not list(tmp_path.glob("**/z"))


SMOKE_HH = ROOT / "configs" / "smoke-hh.yaml"
HH_HELPFUL = ROOT / "tests" / "fixtures" / "hh_helpful_sample.jsonl"


def _hh_rows_with(bad: dict, at: int = 3) -> list[dict]:
    rows = [json.loads(line) for line in HH_HELPFUL.read_text(encoding="utf-8").splitlines()[:5]]
    rows.insert(at - 1, bad)
    return rows


NEW_FORMAT_ROWS = [
    # (id, storage, line 3 of the helpful dataset, what the message says)
    ("trl-number", "jsonl", {"chosen": 7, "rejected": "x"}, "column 'chosen' must be a string or a list of messages"),
    ("trl-bad-role", "jsonl", {"chosen": [{"role": "human", "content": "q"}, {"role": "assistant", "content": "x"}],
                               "rejected": "y"}, "column 'chosen'[0].role must be one of system, user, assistant"),
    ("trl-missing-rejected", "jsonl", {"chosen": "\n\nHuman: q\n\nAssistant: x"}, "missing column 'rejected'"),
    ("parquet-empty-chosen", "parquet", {"chosen": "", "rejected": "y"}, "column 'chosen' is empty"),
]


@pytest.mark.parametrize(("storage", "bad", "fragment"), [c[1:] for c in NEW_FORMAT_ROWS],
                         ids=[c[0] for c in NEW_FORMAT_ROWS])
def test_bad_row_in_a_new_format_names_file_and_line(tmp_path, capsys, storage, bad, fragment):
    rows = _hh_rows_with(bad)
    if storage == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        data = tmp_path / "helpful.parquet"
        pq.write_table(pa.Table.from_pylist(rows), data)
    else:
        data = tmp_path / "helpful.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    run_dir = tmp_path / "run"
    code, error = sipo(capsys, "run", str(SMOKE_HH), f"run_dir={run_dir}", f"data.path.helpful={data}",
                       "data.on_bad_row=refuse")
    assert code == 2
    assert error.startswith(f"sipo: error: {data}:3: "), error
    assert fragment in error
    assert_nothing_half_written(run_dir)


def test_bad_test_path_row_names_file_and_line(tmp_path, capsys):
    test_file = tmp_path / "test.jsonl"
    test_file.write_text('{"prompt": "ok"}\n{"prompt": 3}\n', encoding="utf-8")
    run_dir = tmp_path / "run"
    code, error = sipo(capsys, "run", str(SMOKE), f"run_dir={run_dir}", f"data.test_path={test_file}")
    assert code == 2
    assert error.startswith(f"sipo: error: {test_file}:2: column 'prompt' must be a string or a list of messages")
    code, error = sipo(capsys, "run", str(SMOKE), f"run_dir={tmp_path / 'run2'}",
                       f"data.test_path={tmp_path / 'missing.jsonl'}")
    assert code == 2 and "missing.jsonl: no such file or folder (data.test_path)" in error
