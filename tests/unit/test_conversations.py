"""Conversations end to end: prompts given as message lists or as HH transcripts, and the run's prompt format as a
chat template of exported tokenizers."""

from __future__ import annotations

import json

import pytest

from sipo import conversation
from sipo.api import stored_prompts
from sipo.errors import ConfigError, DataError

CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Name a colour."}]


def test_an_hh_transcript_prompt_string_is_split_into_turns():
    text = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Name a colour.\n\nAssistant:"
    assert conversation.prompt_from_text(text) == conversation.encode(CHAT[1:])
    assert conversation.prompt_from_text("\n\nHuman: Name a colour.\n\nAssistant:") == "Name a colour."
    for text in ("Name a colour.", "\n\nHuman: Hi\n\nAssistant: Hello!", "Hi\n\nHuman: q\n\nAssistant:"):
        assert conversation.prompt_from_text(text) == text  # not a transcript prompt: kept as it is


def test_an_explicit_transcript_prompt_has_the_id_of_the_implicit_one(tmp_path):
    """The train/test overlap check compares prompt ids: the same HH prompt in both shapes must have one id."""
    from sipo.data.formats import load_test_prompts
    from sipo.data.jsonl import load_jsonl

    implicit = {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Name a colour.\n\nAssistant: Blue.",
                "rejected": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Name a colour.\n\nAssistant: No."}
    explicit = {"prompt": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Name a colour.\n\nAssistant:",
                "chosen": "Blue.", "rejected": "No."}
    files = []
    for i, row in enumerate((implicit, explicit, {"prompt": explicit["prompt"]})):
        files.append(tmp_path / f"{i}.jsonl")
        files[-1].write_text(json.dumps(row) + "\n")
    ids = {load_jsonl(files[0], ["h"])[0].prompt_id, load_jsonl(files[1], ["h"])[0].prompt_id,
           load_test_prompts(files[2])[0].prompt_id}
    assert len(ids) == 1


def test_generate_takes_strings_conversations_and_lists_of_both():
    encoded = conversation.encode(CHAT)
    assert stored_prompts("Hi") == ["Hi"]
    assert stored_prompts(CHAT) == [encoded]  # one conversation alone
    assert stored_prompts([CHAT, "Hi", [{"role": "user", "content": "Yo"}]]) == [encoded, "Hi", "Yo"]
    with pytest.raises(ConfigError, match=r"prompts\[1\]: a prompt must end with a user message"):
        stored_prompts(["Hi", CHAT[:3]])
    with pytest.raises(ConfigError, match=r"prompts\[0\]\[0\]\.role must be one of"):
        stored_prompts([[{"role": "human", "content": "x"}]])


def test_generate_input_rows_take_message_lists(tmp_path):
    from sipo.cli_commands import _read_prompts

    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps({"prompt": CHAT, "prompt_id": "c"}) + "\n" + json.dumps({"prompt": "Hi"}) + "\n")
    assert _read_prompts(str(path)) == [("c", CHAT), ("2", "Hi")]
    path.write_text(json.dumps({"prompt": 3}) + "\n")
    with pytest.raises(DataError, match=r"in\.jsonl:1: 'prompt' must be a string or a list"):
        _read_prompts(str(path))


@pytest.mark.parametrize("template", ["plain", "raw"])
def test_the_exported_chat_template_writes_the_runs_prompt_format(template):
    from sipo.models.loading import build_tokenizer, format_prompt, run_chat_template

    tokenizer = build_tokenizer("byte")
    expected = {p: format_prompt(tokenizer, p, template) for p in ("Hi", conversation.encode(CHAT))}
    tokenizer.chat_template = run_chat_template(tokenizer, template)
    for prompt, text in expected.items():
        assert tokenizer.apply_chat_template(conversation.to_messages(prompt), add_generation_prompt=True,
                                             tokenize=False) == text
    assert run_chat_template(tokenizer, "chat") is None  # a tokenizer with its own template keeps it


def test_the_model_card_shows_the_prompt_format_as_text():
    from sipo.export import prompt_format_lines
    from sipo.models.loading import PLAIN_CHAT_TEMPLATE

    text = "\n".join(prompt_format_lines("plain", PLAIN_CHAT_TEMPLATE))
    assert "BEGINNING OF CONVERSATION: USER: Name a colour. ASSISTANT:" in text
    assert "BEGINNING OF CONVERSATION: USER: Hi ASSISTANT: Hello! USER: Name a colour. ASSISTANT:" in text
    assert "own chat template" in "\n".join(prompt_format_lines("chat", None))


def test_an_adapter_export_on_the_runs_own_sft_model_is_refused(tmp_path, monkeypatch):
    """No model is loaded: the refusal comes before any adapter is built."""
    from sipo import export

    run_dir = tmp_path / "run"
    (run_dir / "sft" / "model").mkdir(parents=True)

    class Run:
        cfg = type("Cfg", (), {})()
        objectives = ["a", "b"]

        def __init__(self, *args, **kwargs):
            from sipo.artifacts import RunDir

            self.run_dir = RunDir(run_dir)

        def default_round(self, method):
            return 1

        def check_stages(self, stages, command):  # the run's stages check out (tested in test_run_integrity)
            pass

    monkeypatch.setattr(export, "AlignedRun", Run)
    monkeypatch.setattr("sipo.api.reader_stages", lambda cfg, method, round_: [])
    monkeypatch.setattr(export, "base_model_path", lambda cfg, rd: str(run_dir / "sft" / "model"))
    with pytest.raises(ConfigError, match=r"its own SFT model .* give --merge"):
        export.export_point(run_dir, "0.5,0.5", tmp_path / "out", method="dpo_soups")
    assert not (tmp_path / "out").exists()
    assert export._inside(str(run_dir / "sft" / "model"), run_dir)
    assert not export._inside("org/model", run_dir) and not export._inside(str(tmp_path), run_dir)


def test_a_system_prompt_starts_every_conversation_without_one_and_the_export_writes_it_too():
    """model.system_prompt: the run's prompts and the exported tokenizer's chat template agree, with the system
    turn added to a one-turn prompt and a conversation that has none, and a conversation's own system turn kept."""
    from sipo.models.loading import build_tokenizer, format_prompt, run_chat_template

    tokenizer = build_tokenizer("byte")
    tokenizer.chat_template = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
                               "{% if add_generation_prompt %}<assistant>{% endif %}")
    own = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    prompts = ("Hi", conversation.encode(CHAT), conversation.encode(own))
    expected = {p: format_prompt(tokenizer, p, "chat", 'Answer "well".') for p in prompts}
    assert expected["Hi"] == '<system>Answer "well".<user>Hi<assistant>'
    assert expected[conversation.encode(own)] == "<system>Be brief.<user>Hi<assistant>"
    assert format_prompt(tokenizer, "Hi", "chat") == "<user>Hi<assistant>"
    assert format_prompt(tokenizer, "Hi", "chat", "") == "<system><user>Hi<assistant>"
    exported = run_chat_template(tokenizer, "chat", 'Answer "well".')
    assert run_chat_template(tokenizer, "chat") is None
    tokenizer.chat_template = exported
    for prompt, text in expected.items():
        assert tokenizer.apply_chat_template(conversation.to_messages(prompt), add_generation_prompt=True,
                                             tokenize=False) == text


def test_a_system_prompt_needs_the_chat_template():
    from pathlib import Path

    from sipo.configure import load_config

    smoke = Path(__file__).resolve().parents[2] / "configs" / "smoke.yaml"
    with pytest.raises(ConfigError, match="model.system_prompt'?: needs model.prompt_template: chat"):
        load_config(smoke, ["run_dir=r", "model.prompt_template=plain", "model.system_prompt=Be brief."])
