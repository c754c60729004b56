"""scripts/decode_bench.py at tiny size on the CPU, in this process (``--inline``): the JSON holds the MOD
equivalence check, every measured phase at every batch size and at the largest batch, with positive figures. The
figures themselves are a plumbing check; the script's real run is at size 7b on a GPU."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "decode_bench.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("decode_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_cpu_run_writes_every_phase(bench, tmp_path, monkeypatch):
    monkeypatch.delenv("OUT", raising=False)
    out = tmp_path / "bench.json"
    rc = bench.main(["--device", "cpu", "--size", "tiny", "--inline", "--phases", "check,generate,decoder,mod2,mod3,"
                     "scoring", "--batches", "1,2", "--search-max", "3", "--new-tokens", "3", "--responses", "2",
                     "--check-prompts", "2", "--check-tokens", "3", "--budget", "600", "--out", str(out),
                     "--work-dir", str(tmp_path / "work")])
    data = json.loads(out.read_text())
    assert rc == 0 and data["ok"], (data.get("failures"), data.get("incomplete"), data.get("worker"))
    assert data["size"] == "tiny" and data["dtype"] == "float32" and data["worker"]["inline"]
    check = data["check"]["mod_float32"]
    assert check["ok"] and check["identical_prompts"] == 2 and check["dtype"] == "float32"
    assert data["model"]["num_hidden_layers"] == 2 and data["model"]["parameters"] > 0
    measured = data["measurements"]
    for phase in ("generate", "decoder", "mod2", "mod3"):
        for batch in ("1", "2", "largest"):
            row = measured[phase][batch]
            assert row["tokens"] == row["batch"] * 3 and row["tokens_per_s"] > 0 and row["peak_memory_mb"] > 0
        assert measured[phase]["largest"]["batch"] == 3 and measured[phase]["largest"]["tries"][0]["ok"]
    for batch in ("1", "2", "largest"):
        row = measured["scoring"][batch]
        assert row["responses"] >= 2 and row["responses_per_s"] > 0 and row["peak_memory_mb"] > 0
    assert data["agreement"]["2"]["decoder_equals_generate"] == 2  # float32 greedy: sipo's decoder is generate
    assert data["agreement"]["2"]["mod2_differs_from_decoder"] >= 1
    assert all(v > 0 for v in data["ratios"]["mod2_vs_one_adapter"].values())
    assert data["targets"]["applies"] is False and data["targets"]["mod2_met"] is None


def test_a_budget_too_short_skips_the_device_work(bench, tmp_path, monkeypatch):
    monkeypatch.delenv("OUT", raising=False)
    out = tmp_path / "short.json"
    rc = bench.main(["--device", "cpu", "--phases", "mod2", "--budget", "5", "--inline", "--out", str(out),
                     "--work-dir", str(tmp_path / "work")])
    data = json.loads(out.read_text())
    assert rc == 1 and not data["ok"] and "time budget" in data["worker"]["skipped"]
    assert data["incomplete"] == ["worker", "mod2"]


def test_bad_arguments_exit_2(bench, capsys):
    for argv in (["--phases", "nope"], ["--batches", "0"], ["--prompt-words", "5,2"]):
        with pytest.raises(SystemExit) as exit_info:
            bench.parse_args(argv)
        assert exit_info.value.code == 2
    assert "decode_bench.py: error" in capsys.readouterr().err


def test_the_7b_size_has_llama_2_7b_shape(monkeypatch):
    """Built on the meta device (no memory): 6.74 billion parameters with a 32,000-token vocabulary."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    monkeypatch.syspath_prepend(str(SCRIPT.parent))  # scripts/device_checks.py: test tooling, not in the package
    import device_checks

    shape = {k: v for k, v in device_checks.SIZES["7b"].items() if k != "vocabulary"}
    with torch.device("meta"):
        model = LlamaForCausalLM(LlamaConfig(vocab_size=32000, tie_word_embeddings=False, **shape))
    assert sum(p.numel() for p in model.parameters()) == 6_738_415_616
