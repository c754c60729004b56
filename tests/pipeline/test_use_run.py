"""Using a finished run: ``sipo generate`` / ``sipo.load`` reproduce what ``evaluate`` decoded, and ``sipo export``
writes adapters and merged models that plain peft / transformers load with the run's numbers.

One smoke run (every method, relative ``run_dir`` so that relocatability is tested, ``train.report_to=[tensorboard]``
so that tracking is tested) is shared by the module.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def sipo(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("sipo")
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "sipo"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SIPO_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([*command, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """``sipo ARGS`` in this process (the console script's main): exit code, stdout, stderr."""
    from sipo.cli import main

    capsys.readouterr()
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """A finished smoke run with every method, started with a RELATIVE run_dir from its parent folder."""
    work = tmp_path_factory.mktemp("use")
    config = work / "smoke.yaml"
    config.write_text((ROOT / "configs" / "smoke.yaml").read_text().replace(
        "tests/fixtures/helpsteer_smoke.jsonl", str(ROOT / "tests" / "fixtures" / "helpsteer_smoke.jsonl")))
    result = sipo("run", str(config), "run_dir=runs/smoke", "methods=[sft,dpo,dpo_soups,mod,dpo_lw,modpo,sipo]",
                  "train.report_to=[tensorboard]", cwd=work)
    assert result.returncode == 0, result.stderr[-3000:]
    return work / "runs" / "smoke"


def evaluated(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "evaluate" / "scores.jsonl").read_text().splitlines()]


def test_generate_command_reproduces_evaluate(smoke_run, capsys, monkeypatch):
    """Three (method, weights) pairs through the console script: the responses are evaluate's."""
    from sipo.records import PromptRecord, read_jsonl

    prompts = read_jsonl(smoke_run / "prepare" / "test_prompts.jsonl", PromptRecord)
    rows = evaluated(smoke_run)
    for method, weights in (("sipo", "correctness=0.5,verbosity=0.5"), ("dpo_soups", "0.5,0.5"),
                            ("modpo", "correctness=1,verbosity=0")):
        wanted = {o: float(v.split("=")[-1]) for o, v in zip(("correctness", "verbosity"), weights.split(","))}
        expected = {r["prompt_id"]: r["response"] for r in rows if r["method"] == method and r["weights"] == wanted}
        assert len(expected) == len(prompts)
        # Options after the positionals, and prompts after an option: options go anywhere on the line.
        monkeypatch.chdir(ROOT.parent)
        code, out, err = cli(capsys, "generate", str(smoke_run), prompts[0].prompt, "--weights", weights,
                             "--method", method, *[p.prompt for p in prompts[1:]])
        assert code == 0, err[-3000:]
        lines = [json.loads(line) for line in out.splitlines()]
        assert [line["response"] for line in lines] == [expected[p.prompt_id] for p in prompts], method
        assert all(line["method"] == method and line["weights"] == wanted for line in lines)


def test_generate_takes_conversations(smoke_run, capsys, tmp_path):
    """A message-list prompt through ``--input`` and the API: the response is that of the encoded prompt."""
    import sipo as sipo_package
    from sipo import conversation

    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": "Name a river."}]
    run = sipo_package.load(smoke_run)
    expected = run.generate([conversation.encode(messages)], "0.5,0.5")
    assert run.generate([messages], "0.5,0.5") == expected == run.generate(messages, "0.5,0.5")
    path = tmp_path / "prompts.jsonl"
    path.write_text(json.dumps({"prompt": messages, "prompt_id": "c1"}) + "\n" + json.dumps({"prompt": "Hi"}) + "\n")
    code, out, err = cli(capsys, "generate", str(smoke_run), "--weights", "0.5,0.5", "--input", str(path))
    assert code == 0, err[-3000:]
    first = json.loads(out.splitlines()[0])
    assert first["prompt_id"] == "c1" and first["prompt"] == messages and first["response"] == expected[0]
    path.write_text(json.dumps({"prompt": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]})
                    + "\n")
    code, _, err = cli(capsys, "generate", str(smoke_run), "--weights", "0.5,0.5", "--input", str(path))
    assert code == 2 and "must end with a user message" in err.strip().splitlines()[-1]


def test_python_api_reproduces_every_evaluated_point(smoke_run):
    import sipo as sipo_package
    from sipo.records import PromptRecord, read_jsonl

    run = sipo_package.load(smoke_run)
    prompts = {p.prompt_id: p.prompt for p in read_jsonl(smoke_run / "prepare" / "test_prompts.jsonl", PromptRecord)}
    groups: dict = {}
    for row in evaluated(smoke_run):
        groups.setdefault((row["method"], row["round"], json.dumps(row["weights"])), []).append(row)
    assert {m for m, _, _ in groups} == {"sft", "dpo", "dpo_soups", "mod", "dpo_lw", "modpo", "sipo"}
    for (method, round_, weights), rows in groups.items():
        responses = run.generate([prompts[r["prompt_id"]] for r in rows], json.loads(weights) or None,
                                 method=method, round=round_)
        assert responses == [r["response"] for r in rows], (method, weights)


def test_points_the_run_does_not_have_are_refused_in_one_line(smoke_run, capsys):
    for args, words in ((["--method", "dpo_lw", "--weights", "0.3,0.7"], "correctness0.5-verbosity0.5"),
                        (["--method", "dpo", "--weights", "0.3,0.7"], "one-hot"),
                        (["--weights", "0.3,0.6"], "sum to 1"),
                        (["--weights", "correctness=0.3,helpfulness=0.7"], "'helpfulness'"),
                        (["--method", "sipo", "--round", "2", "--weights", "0.3,0.7"], "rounds 1..1"),
                        (["--weights", "0.3,0.7", "--max-new-tokens", "-3"], "--max-new-tokens: must be at least 1"),
                        (["--weights", "0.3,0.7", "--max-new-tokens", "0"], "--max-new-tokens: must be at least 1"),
                        (["--weights", "0.3,0.7", "--device", "foo"], "--device: 'foo' is not a device")):
        code, _, err = cli(capsys, "generate", str(smoke_run), "hello", *args)
        assert code == 2, (args, err[-2000:])
        lines = err.strip().splitlines()
        assert lines[-1].startswith("sipo: error:") and words in lines[-1], (args, lines[-1])


def test_adapters_name_their_base_by_an_absolute_path(smoke_run):
    """The run was started with run_dir=runs/smoke; its adapters still load from any folder."""
    from peft import AutoPeftModelForCausalLM

    for folder in (smoke_run / "dpo" / "verbosity", smoke_run / "r1" / "realign" / "correctness",
                   smoke_run / "modpo" / "correctness0.5-verbosity0.5"):
        base = json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"]
        assert Path(base).is_absolute() and Path(base) == (smoke_run / "sft" / "model").resolve()
    cwd = os.getcwd()
    try:
        os.chdir(smoke_run.parent.parent.parent)
        AutoPeftModelForCausalLM.from_pretrained(str(smoke_run / "dpo" / "verbosity"))
    finally:
        os.chdir(cwd)


@pytest.mark.parametrize("method", ["dpo_soups", "sipo"])
def test_exported_soup_matches_the_run(smoke_run, tmp_path, method, capsys):
    """Plain peft loads the exported adapter with the run's next-token logits (1e-5); plain transformers loads
    the merged export and decodes greedily the same tokens as the run's own decoding of that soup."""
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sipo.api import AlignedRun, parse_weights
    from sipo.decoding.mod import mod_generate_token_ids
    from sipo.export import export_adapter_name
    from sipo.stages.model_calls import format_prompts

    weights = "correctness=0.3,verbosity=0.7"
    # The smoke run's base model is its own SFT model: an adapter alone would not stand alone, so --merge is needed.
    code, _, err = cli(capsys, "export", str(smoke_run), "--weights", weights, "--method", method,
                       "--out", str(tmp_path / "out0"))
    assert code == 2 and "its own SFT model" in err.strip().splitlines()[-1] and "--merge" in err
    assert not (tmp_path / "out0").exists()
    code, _, err = cli(capsys, "export", str(smoke_run), "--weights", weights, "--method", method,
                       "--out", str(tmp_path / "out1"), "--merge")
    assert code == 0, err[-3000:]
    merged_dir = tmp_path / "out1"
    adapter_dir = merged_dir / "adapter"
    assert (adapter_dir / "adapter_model.safetensors").is_file() and (merged_dir / "model.safetensors").is_file()
    card = (merged_dir / "README.md").read_text()
    assert "smoke" in card and "(0.3, 0.7)" in card and f"`{method}`" in card and "| (0.5, 0.5) |" in card
    assert "BEGINNING OF CONVERSATION: USER: Name a colour. ASSISTANT:" in card

    run = AlignedRun(smoke_run, device="cpu")
    name = export_adapter_name(run, method, parse_weights(weights, run.objectives), None)
    bank, tokenizer = run.bank()
    texts = format_prompts(tokenizer, ["What is the tallest mountain?", "Say something about rivers."], run.cfg)
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)  # plain loaders from elsewhere: nothing depends on the current folder
        peft_model = AutoPeftModelForCausalLM.from_pretrained(str(adapter_dir)).eval()
        merged = AutoModelForCausalLM.from_pretrained(str(merged_dir)).eval()
        exported_tokenizer = AutoTokenizer.from_pretrained(str(merged_dir))
    finally:
        os.chdir(cwd)
    # The exported tokenizer's chat template writes the run's prompt format, conversations included.
    from sipo import conversation

    for prompt in ("What is the tallest mountain?", conversation.encode(
            [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
             {"role": "user", "content": "Say something about rivers."}])):
        assert exported_tokenizer.apply_chat_template(conversation.to_messages(prompt), add_generation_prompt=True,
                                                      tokenize=False) == format_prompts(tokenizer, [prompt], run.cfg)[0]
    with torch.no_grad():
        expected = bank.forward([name] * len(texts), **batch).logits[:, -1]
        exported = peft_model(**batch).logits[:, -1]
        assert torch.allclose(exported, expected, atol=1e-5, rtol=0)
        assert torch.allclose(merged(**batch).logits[:, -1], expected, atol=1e-4, rtol=0)

    steps = 12
    ours = mod_generate_token_ids(bank, tokenizer, texts[:1], [{name: 1.0}], max_new_tokens=steps, progress=False)[0]
    ids = tokenizer(texts[0], return_tensors="pt")
    with torch.no_grad():
        out = merged.generate(**ids, max_new_tokens=steps, do_sample=False, eos_token_id=tokenizer.eos_token_id,
                              pad_token_id=tokenizer.pad_token_id)
    theirs = out[0, ids["input_ids"].shape[1]:].tolist()
    if tokenizer.eos_token_id in theirs:
        theirs = theirs[:theirs.index(tokenizer.eos_token_id)]
    assert theirs == list(ours)


def test_export_refuses_sft_and_a_used_folder(smoke_run, tmp_path, capsys):
    code, _, err = cli(capsys, "export", str(smoke_run), "--weights", "0.5,0.5", "--method", "sft",
                       "--out", str(tmp_path / "x"))
    assert code == 2 and "no adapter to export" in err.strip().splitlines()[-1]
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "keep.txt").write_text("mine")
    code, _, err = cli(capsys, "export", str(smoke_run), "--weights", "0.5,0.5", "--out", str(tmp_path / "used"))
    assert code == 2 and "not an empty folder" in err.strip().splitlines()[-1]
    assert (tmp_path / "used" / "keep.txt").read_text() == "mine"


def test_tensorboard_events_hold_per_step_losses_and_rewards(smoke_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for unit in ("dpo/correctness", "dpo/verbosity", "r1/realign/correctness", "dpo_lw/correctness0.5-verbosity0.5",
                 "modpo/correctness0.5-verbosity0.5", "sft/model"):
        events = EventAccumulator(str(smoke_run / "tensorboard" / unit))
        events.Reload()
        losses = events.Scalars("train/loss")
        steps = json.loads((smoke_run / unit.rsplit("/", 1)[0] / "manifest.json").read_text())
        assert [e.step for e in losses] == list(range(1, len(losses) + 1)) and len(losses) >= 3, unit
        if unit != "sft/model":
            assert "train/rewards/margins" in events.Tags()["scalars"], unit
            metrics = steps["counts"][f"metrics_{unit.rsplit('/', 1)[1]}"]  # one loss summary per adapter
            assert metrics["logged_steps"] == len(losses)
            assert [v for _, v in metrics["loss_curve"]] == pytest.approx([e.value for e in losses], abs=1e-5)


def test_run_log_holds_what_the_console_showed(smoke_run):
    log = (smoke_run / "run.log").read_text()
    assert log.startswith("===== ") and "sipo run" in log.splitlines()[0]
    for line in ("prepare      running", "evaluate     done", "stage(s) ran, 0 skipped"):
        assert line in log


def test_generate_reads_prompts_from_a_jsonl_file(smoke_run, tmp_path, capsys):
    import sipo as sipo_package

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt_id": "q1", "prompt": "Tell me about rivers."}\n\n{"prompt": "And lakes?"}\n')
    code, out, err = cli(capsys, "generate", str(smoke_run), "--input", str(prompts), "--weights", "0.2,0.8",
                         "--method", "mod", "--max-new-tokens", "5")
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["prompt_id"] for line in lines] == ["q1", "3"]  # a row without an id gets its line number
    expected = sipo_package.load(smoke_run).generate(["Tell me about rivers.", "And lakes?"], [0.2, 0.8],
                                                     method="mod", max_new_tokens=5)
    assert [line["response"] for line in lines] == expected
    prompts.write_text('{"prompt": "fine"}\n{"text": "no prompt key"}\n')
    code, _, err = cli(capsys, "generate", str(smoke_run), "--input", str(prompts), "--weights", "0.2,0.8")
    last = err.strip().splitlines()[-1]
    assert code == 2 and f"{prompts}:2: 'prompt' must be a string or a list of" in last


def test_generate_and_export_refuse_an_altered_run_unless_allow_stale(smoke_run, tmp_path, capsys):
    """A finished adapter altered after the run: generate and export refuse in one line naming its stage and the
    command that completes the run; with --allow-stale they go on and say so (JSON lines, model card)."""
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(smoke_run, run)
    weights = run / "r1" / "realign" / "correctness" / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    code, out, err = cli(capsys, "generate", str(run), "hello", "--weights", "0.3,0.7")
    line = err.strip().splitlines()[-1]
    assert code == 2 and out == "" and "stage r1/realign" in line and str(weights) in line and "sipo run" in line
    code, out, _ = cli(capsys, "generate", str(run), "hello", "--weights", "0.3,0.7", "--allow-stale")
    assert code == 0 and json.loads(out.splitlines()[0])["stale"].startswith("stale run (--allow-stale): stage "
                                                                             "r1/realign")
    code, out, _ = cli(capsys, "generate", str(run), "hello", "--weights", "0.3,0.7", "--method", "mod")
    assert code == 0 and "stale" not in json.loads(out.splitlines()[0])  # mod reads the DPO adapters only
    assert cli(capsys, "export", str(run), "--weights", "0.3,0.7", "--out", str(tmp_path / "refused"),
               "--merge")[0] == 2
    assert not (tmp_path / "refused").exists()
    code, _, _ = cli(capsys, "export", str(run), "--weights", "0.3,0.7", "--out", str(tmp_path / "stale"),
                     "--allow-stale", "--merge")
    assert code == 0 and "Warning: stale run (--allow-stale): stage r1/realign" in \
        (tmp_path / "stale" / "README.md").read_text()
