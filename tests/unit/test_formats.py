"""Every data format and storage of docs/data.md, on real rows from tests/fixtures/ where there are real rows.

TRL's preference formats are read from the HH-RLHF extracts (implicit prompt, standard) and from the same rows
rewritten into the other three TRL shapes, which must give exactly the same pairs. Parquet, arrow and save_to_disk
copies of the HelpSteer extract must give the same pairs as its JSONL. One dataset per objective, the user's own
test prompts and the ties setting of N-objective conflicts are checked on pure functions (the pipeline test
tests/pipeline/test_data_formats.py runs them through ``sipo run``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sipo import conversation
from sipo.config import DataConfig, PipelineConfig
from sipo.configure import load_config
from sipo.data import bad_rows, load_pairs, make_pair, make_splits, pair_counts, prompt_id_for
from sipo.data.formats import hh_messages, load_test_prompts
from sipo.data.helpsteer import load_helpsteer
from sipo.data.jsonl import load_jsonl
from sipo.data.pku_saferlhf import load_pku_saferlhf
from sipo.data.splits import select_conflict_pairs
from sipo.errors import ConfigError, DataError
from sipo.models.loading import format_prompt
from sipo.prompting import review_prompt

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
HELPFUL = FIXTURES / "hh_helpful_sample.jsonl"
HARMLESS = FIXTURES / "hh_harmless_sample.jsonl"
HELPSTEER = FIXTURES / "helpsteer_sample.jsonl"
PKU = FIXTURES / "pku_saferlhf_sample.jsonl"
CV = ["correctness", "verbosity"]


def rows_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def cfg_for(path, objectives, source="jsonl", **data) -> PipelineConfig:
    return PipelineConfig(run_dir="unused", objectives=objectives, data=DataConfig(source=source, path=path, **data))


def summary(pairs):
    return [(p.pair_id, p.prompt_id, p.response_a, p.response_b, p.preferred) for p in pairs]


# ---------------------------------------------------------------------------------------------------------------
# TRL preference formats on HH-RLHF rows


def test_hh_implicit_prompt_rows_keep_their_turns():
    """The 30 helpful-base rows give 30 pairs; the prompt is every turn before the last Assistant turn.

    Row 1 (the known first train row): Human asks to learn horseshoes, Assistant answers, Human asks for the
    rules; the two last Assistant turns differ ("A horseshoe is usually made ..." vs "Horseshoes are either ...").
    """
    pairs = load_jsonl(HELPFUL, ["helpful"])
    assert len(pairs) == 30
    assert all(p.preferred == {"helpful": "a"} for p in pairs)
    first = pairs[0]
    messages = conversation.decode(first.prompt)
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[0]["content"] == "Hi, I want to learn to play horseshoes. Can you teach me?"
    assert messages[2]["content"] == "Okay. What else is needed to play, and what are the rules?"
    assert first.response_a.startswith("A horseshoe is usually made out of metal")
    assert first.response_b.startswith("Horseshoes are either metal or plastic discs.")
    rows = rows_of(HELPFUL)
    # Every chosen transcript is its prompt's turns plus the chosen response: nothing is lost or flattened.
    for pair, row in zip(pairs, rows):
        turns = hh_messages(row["chosen"])
        assert conversation.to_messages(pair.prompt) == turns[:-1]
        assert pair.response_a == turns[-1]["content"]
    single = [p for p in pairs if conversation.decode(p.prompt) is None]
    assert single and all("\n\nHuman:" not in p.prompt for p in single)  # one-turn prompts stay plain strings


def _explicit_standard(row):
    turns_c, turns_r = hh_messages(row["chosen"]), hh_messages(row["rejected"])
    return {"prompt": conversation.encode(turns_c[:-1]) if len(turns_c) == 2 else None,
            "prompt_messages": turns_c[:-1], "chosen": turns_c[-1]["content"], "rejected": turns_r[-1]["content"],
            "chosen_messages": turns_c, "rejected_messages": turns_r}


@pytest.mark.parametrize("shape", ["explicit_conversational", "implicit_conversational", "explicit_standard"])
def test_other_trl_shapes_give_the_same_pairs(tmp_path, shape):
    """The HH rows rewritten as TRL's other shapes: identical prompts, responses, ids and labels."""
    expected = load_jsonl(HELPFUL, ["helpful"])
    rows = []
    for row in rows_of(HELPFUL):
        parts = _explicit_standard(row)
        if shape == "explicit_conversational":
            rows.append({"prompt": parts["prompt_messages"],
                         "chosen": [{"role": "assistant", "content": parts["chosen"]}],
                         "rejected": [{"role": "assistant", "content": parts["rejected"]}]})
        elif shape == "implicit_conversational":
            rows.append({"chosen": parts["chosen_messages"], "rejected": parts["rejected_messages"]})
        elif len(parts["prompt_messages"]) == 1:  # a standard explicit prompt is one string: one-turn rows only
            rows.append({"prompt": parts["prompt_messages"][0]["content"], "chosen": parts["chosen"],
                         "rejected": parts["rejected"]})
    got = load_jsonl(write_rows(tmp_path / "rows.jsonl", rows), ["helpful"])
    if shape == "explicit_standard":
        single = [p for p in expected if conversation.decode(p.prompt) is None]
        assert len(got) == len(single) > 0
        expected = single
    assert summary(got) == summary(expected)


def test_plain_implicit_prompt_is_the_common_prefix(tmp_path):
    """TRL's own example: the shared words are the prompt, never cut inside a word."""
    path = write_rows(tmp_path / "rows.jsonl", [{"chosen": "The sky is blue.", "rejected": "The sky is green."},
                                                {"chosen": "I like cats a lot", "rejected": "I like carrots"}])
    first, second = load_jsonl(path, ["good"])
    assert (first.prompt, first.response_a, first.response_b) == ("The sky is", "blue.", "green.")
    assert (second.prompt, second.response_a, second.response_b) == ("I like", "cats a lot", "carrots")


def test_rows_without_a_pair_are_skipped_and_counted(tmp_path, caplog):
    """HH helpful-base row 248 of the 500-row sample has an empty rejected response; such rows are skipped."""
    rows = rows_of(HELPFUL)[:2]
    rows.append({"chosen": "\n\nHuman: Hi?\n\nAssistant: Hello.", "rejected": "\n\nHuman: Hi?\n\nAssistant: "})
    rows.append({"chosen": "\n\nHuman: A\n\nAssistant: x", "rejected": "\n\nHuman: B\n\nAssistant: y"})
    rows.append({"prompt": "q", "chosen": "same", "rejected": "same"})
    path = write_rows(tmp_path / "rows.jsonl", rows)
    with caplog.at_level("WARNING"), bad_rows.collecting("skip") as log:
        pairs = load_jsonl(path, ["helpful"])
    assert len(pairs) == 2
    assert log.counts()["files"][str(path)]["first_rows"] == [3, 4, 5]
    assert "skipped 3 unusable row(s)" in caplog.text


def test_single_label_formats_need_one_objective_or_a_mapping():
    with pytest.raises(ConfigError, match=r"'data.path'.*label one objective.*data.path=\{helpful: FILE"):
        load_jsonl(HELPFUL, ["helpful", "harmless"])


# ---------------------------------------------------------------------------------------------------------------
# HelpSteer2 preference, PKU-SafeRLHF through the jsonl source


def test_helpsteer2_preference_strength(tmp_path):
    """Not real HelpSteer2 preference rows (none were available): HelpSteer responses put in its columns.
    Negative strength prefers response_1 (a), positive response_2 (b), zero is a tie."""
    hs = rows_of(HELPSTEER)[:4]
    rows = [{"split": "train", "prompt": hs[0]["prompt"], "response_1": hs[0]["response"],
             "response_2": hs[i]["response"], "preference_strength": s} for i, s in ((1, -2), (2, 3), (3, 0))]
    pairs = load_jsonl(write_rows(tmp_path / "hs2.jsonl", rows), ["helpfulness"])
    assert [p.preferred["helpfulness"] for p in pairs] == ["a", "b", None]
    assert pairs[0].response_a == hs[0]["response"] and pairs[1].response_b == hs[2]["response"]
    rows[1]["preference_strength"] = 4
    with pytest.raises(DataError, match=r"hs2\.jsonl:2: .*'preference_strength' = 4 is out of range \[-3, 3\]"):
        load_jsonl(write_rows(tmp_path / "hs2.jsonl", rows), ["helpfulness"])


def test_pku_columns_are_detected_by_the_jsonl_source():
    assert summary(load_jsonl(PKU, ["better", "safer"])) == summary(load_pku_saferlhf(PKU, ["better", "safer"]))


def test_helpsteer_columns_are_detected_by_the_jsonl_source():
    assert summary(load_jsonl(HELPSTEER, CV)) == summary(load_helpsteer(HELPSTEER, CV))


# ---------------------------------------------------------------------------------------------------------------
# Storage: parquet, arrow, save_to_disk, Hub


@pytest.fixture
def helpsteer_dataset():
    datasets = pytest.importorskip("datasets")
    return datasets.Dataset.from_list(rows_of(HELPSTEER))


def test_parquet_arrow_and_saved_dataset_load_like_the_jsonl(tmp_path, helpsteer_dataset):
    expected = summary(load_helpsteer(HELPSTEER, CV))
    assert len(expected) == 81
    parquet = tmp_path / "helpsteer.parquet"
    helpsteer_dataset.to_parquet(str(parquet))
    saved = tmp_path / "saved"
    helpsteer_dataset.save_to_disk(str(saved))
    (arrow,) = saved.glob("*.arrow")
    for path in (parquet, saved, arrow):
        assert summary(load_helpsteer(path, CV)) == expected, path
        assert summary(load_pairs(cfg_for(str(path), CV, source="helpsteer"))) == expected, path
    folder = tmp_path / "mixed"
    folder.mkdir()
    helpsteer_dataset.select(range(30)).to_parquet(str(folder / "a.parquet"))
    write_rows(folder / "b.jsonl", rows_of(HELPSTEER)[30:])
    assert summary(load_helpsteer(folder, CV)) == expected


def test_saved_dataset_dict_picks_the_split(tmp_path, helpsteer_dataset):
    from datasets import DatasetDict

    DatasetDict({"train": helpsteer_dataset, "test": helpsteer_dataset.select(range(4))}).save_to_disk(
        str(tmp_path / "dd"))
    assert len(load_helpsteer(tmp_path / "dd", CV, split="test")) == 6  # prompt 0: 4 responses, C(4, 2) pairs
    assert len(load_helpsteer(tmp_path / "dd", CV)) == 81
    with pytest.raises(DataError, match=r"dd: the saved dataset has no split 'dev' \(data.split; it has: train, test\)"):
        load_helpsteer(tmp_path / "dd", CV, split="dev")


def test_bad_parquet_row_names_the_file_and_row(tmp_path, helpsteer_dataset):
    rows = rows_of(HELPSTEER)[:5]
    rows[2]["correctness"] = 9
    import datasets

    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "bad.parquet"))
    with pytest.raises(DataError, match=r"bad\.parquet:3: score column 'correctness' = 9 is out of range"):
        load_helpsteer(tmp_path / "bad.parquet", CV)
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match=r"junk\.parquet: not a readable parquet file"):
        load_helpsteer(tmp_path / "junk.parquet", CV)


def test_hub_id_goes_to_load_dataset_with_split_and_revision(monkeypatch, helpsteer_dataset):
    """No network: load_dataset is replaced; the id, split, revision and data_dir must reach it."""
    import datasets

    calls = []

    def fake_load_dataset(name, **kwargs):
        calls.append((name, kwargs))
        return helpsteer_dataset

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    pairs = load_pairs(cfg_for("nvidia/HelpSteer", CV, source="helpsteer", split="validation", revision="abc123"))
    assert len(pairs) == 81
    assert calls == [("nvidia/HelpSteer", {"split": "validation", "revision": "abc123", "data_dir": None})]


def test_hub_id_unavailable_offline_is_one_line(monkeypatch):
    import datasets

    def offline(name, **kwargs):
        raise ConnectionError("Couldn't reach 'someone/missing' on the Hub (LocalEntryNotFoundError)\nmore")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError) as info:
        load_pairs(cfg_for("someone/missing", CV, source="helpsteer"))
    assert "cannot load Hub dataset 'someone/missing' (split=train, revision=None)" in str(info.value)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------------------------------
# Conversations through the templates


class ChatTokenizer:
    chat_template = "{{ messages }}"

    def apply_chat_template(self, messages, add_generation_prompt, tokenize):
        return "|".join(f"{m['role']}={m['content']}" for m in messages) + ("|assistant=" if add_generation_prompt
                                                                              else "")


def test_multi_turn_prompts_are_rendered_turn_by_turn():
    prompt = load_jsonl(HELPFUL, ["helpful"])[0].prompt
    chat = format_prompt(ChatTokenizer(), prompt, "chat")
    assert chat.startswith("user=Hi, I want to learn to play horseshoes. Can you teach me?|assistant=I can, but")
    assert chat.endswith("|user=Okay. What else is needed to play, and what are the rules?|assistant=")
    plain = format_prompt(object(), prompt, "plain")
    assert plain.startswith("BEGINNING OF CONVERSATION: USER: Hi, I want to learn")
    assert plain.count("USER:") == 2 and plain.count("ASSISTANT:") == 2 and plain.endswith("rules? ASSISTANT:")
    assert format_prompt(object(), "Name a colour.", "plain") == \
        "BEGINNING OF CONVERSATION: USER: Name a colour. ASSISTANT:"
    assert format_prompt(ChatTokenizer(), "Name a colour.", "chat") == "user=Name a colour.|assistant="
    review = review_prompt(prompt, "x", ["helpful"], {})
    assert "User: Hi, I want to learn" in review and "<sipo:messages>" not in review


def test_conversation_encoding_round_trips():
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert conversation.decode(conversation.encode(messages)) == messages
    assert conversation.encode([{"role": "user", "content": "Hi"}]) == "Hi"
    with pytest.raises(ValueError, match="end with a user message"):
        conversation.encode([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}])


# ---------------------------------------------------------------------------------------------------------------
# One dataset per objective, test prompts, ties


def test_one_dataset_per_objective_leaves_the_other_label_to_fill():
    cfg = load_config(ROOT / "configs" / "smoke-hh.yaml", ["run_dir=unused"])
    pairs = load_pairs(cfg)
    assert pair_counts(pairs, ["helpful", "harmless"]) == {
        "prompts": 59, "pairs": 60, "conflicting_pairs": 0, "ties": {"helpful": 0, "harmless": 0},
        "unlabelled": {"helpful": 30, "harmless": 30}}
    helpful = [p for p in pairs if p.preferred["helpful"] is not None]
    assert len(helpful) == 30 and all(p.unlabelled == ["harmless"] and p.preferred["harmless"] is None
                                      for p in helpful)
    splits = make_splits(pairs, ["helpful", "harmless"], conflict_fraction=0.6, test_fraction=0.2,
                         validation_fraction=0.0, seed=0)
    assert splits.train_conflict == []  # nothing conflicts until the label stage fills the labels
    assert all(p.preferred[o] is not None for o in ("helpful", "harmless") for p in splits.train[o])


def test_a_pair_in_both_datasets_gets_both_labels(tmp_path):
    row = {"prompt": "q", "chosen": "x", "rejected": "y"}
    a = write_rows(tmp_path / "a.jsonl", [row, {"prompt": "q2", "chosen": "u", "rejected": "v"}])
    b = write_rows(tmp_path / "b.jsonl", [{"prompt": "q", "response_a": "x", "response_b": "y", "o2": "b"}])
    pairs = load_pairs(cfg_for({"o1": str(a), "o2": str(b)}, ["o1", "o2"]))
    both = next(p for p in pairs if p.prompt == "q")
    assert both.preferred == {"o1": "a", "o2": "b"} and both.unlabelled == [] and both.conflict


def test_every_data_input_is_discoverable_from_the_config():
    from sipo.config import data_input_paths

    cfg = load_config(ROOT / "configs" / "smoke-hh.yaml", ["run_dir=unused", "data.test_path=t.jsonl"])
    assert data_input_paths(cfg) == ["tests/fixtures/hh_helpful_sample.jsonl",
                                     "tests/fixtures/hh_harmless_sample.jsonl", "t.jsonl"]
    smoke = load_config(ROOT / "configs" / "smoke.yaml", ["run_dir=unused"])
    assert data_input_paths(smoke) == ["tests/fixtures/helpsteer_smoke.jsonl"]


def test_data_path_mapping_is_validated():
    base = ["run_dir=x", "objectives=[helpful,harmless]", "data.source=jsonl"]
    with pytest.raises(ConfigError, match=r"'data.path.nope': 'nope' is not one of the objectives"):
        load_config(None, [*base, "data.path={helpful: a, nope: b}", "model.name_or_path=random"])
    with pytest.raises(ConfigError, match=r"'data.path': has no dataset for objective 'harmless'"):
        load_config(None, [*base, "data.path={helpful: a}", "model.name_or_path=random"])
    with pytest.raises(ConfigError, match=r"'data.fill_judge': reward_model needs a head for every objective"):
        load_config(None, [*base, "data.path={helpful: a, harmless: b}", "model.name_or_path=random",
                           "data.fill_judge=reward_model"])
    with pytest.raises(ConfigError, match=r"'data.path.helpful.splitt': unknown key"):
        load_config(None, [*base, "data.path={helpful: {path: a, splitt: b}, harmless: c}",
                           "model.name_or_path=random"])


def test_test_path_prompts_are_exactly_the_files(tmp_path):
    """The test file's prompts (HH harmless rows 1-5, TRL format) are the test prompts, in file order; none of the
    data is held out, and a training pair of one of those prompts is dropped."""
    test_file = write_rows(tmp_path / "test.jsonl", rows_of(HARMLESS)[:5] + [{"prompt": "A plain prompt."}])
    prompts = load_test_prompts(test_file)
    assert len(prompts) == 6 and prompts[-1].prompt == "A plain prompt."
    assert prompts[0].prompt == load_jsonl(HARMLESS, ["harmless"])[0].prompt
    pairs = load_jsonl(HELPFUL, ["helpful"]) + [make_pair("A plain prompt.", "x", "y", {"helpful": "a"})]
    splits = make_splits(pairs, ["helpful"], conflict_fraction=0.6, test_fraction=0.2, validation_fraction=0.0,
                         seed=0, test_prompts=prompts)
    assert [r.prompt_id for r in splits.test_prompts] == [r.prompt_id for r in prompts]
    assert splits.counts["split_prompts"]["test"] == 0
    assert splits.counts["pairs_of_test_path_prompts_dropped"] == 1
    assert prompt_id_for("A plain prompt.") not in {p.prompt_id for p in splits.train["helpful"]}
    write_rows(tmp_path / "bad.jsonl", [{"prompt": "ok"}, {"question": "no prompt"}])
    with pytest.raises(DataError, match=r"bad\.jsonl:2: missing column 'prompt'"):
        load_test_prompts(tmp_path / "bad.jsonl")


def test_conflict_max_ties_counts_what_it_keeps_and_loses():
    """Three objectives. p1: a/b/tie (one tie), p2: a/b/a (none), p3: a/tie/tie (no conflict), p4: a/b/tie."""
    objs = ["x", "y", "z"]
    pairs = [make_pair("p1", "r1", "s1", {"x": "a", "y": "b", "z": None}),
             make_pair("p2", "r2", "s2", {"x": "a", "y": "b", "z": "a"}),
             make_pair("p3", "r3", "s3", {"x": "a", "y": None, "z": None}),
             make_pair("p4", "r4", "s4", {"x": "a", "y": "b", "z": None}),
             make_pair("p4", "r4", "t4", {"x": "a", "y": "b", "z": "b"})]
    strict, counts = select_conflict_pairs(pairs, objs, seed=0)
    assert sorted(p.prompt for p in strict) == ["p2", "p4"]
    assert counts["conflict_ties"] == {"max_ties": 0, "pairs_kept": 2, "pairs_lost": 2, "prompts_lost": 1}
    relaxed, counts = select_conflict_pairs(pairs, objs, seed=0, conflict_max_ties=1)
    assert sorted(p.prompt for p in relaxed) == ["p1", "p2", "p4"]
    assert counts["conflict_ties"] == {"max_ties": 1, "pairs_kept": 4, "pairs_lost": 0, "prompts_lost": 0}


def test_fill_labels_records_what_it_filled():
    from sipo.stages.label import fill_labels

    pair = load_pairs(load_config(ROOT / "configs" / "smoke-hh.yaml", ["run_dir=unused"]))[0]
    filled = fill_labels(pair, {"harmless": (-0.5, 0.25)})
    assert filled.preferred == {"helpful": "a", "harmless": "b"} and filled.conflict
    assert filled.filled == ["harmless"] and filled.unlabelled == []
    assert (filled.scores_a["harmless"], filled.scores_b["harmless"]) == (-0.5, 0.25)
    assert fill_labels(pair, {"harmless": (1.0, 1.0)}).preferred["harmless"] is None


# ---------------------------------------------------------------------------------------------------------------
# Bad rows in the new formats: one line naming the file and line

TRL_OK = {"prompt": "q", "chosen": "x", "rejected": "y"}
BAD_ROWS = [
    ({"prompt": "q", "chosen": 3, "rejected": "y"}, "column 'chosen' must be a string or a list of messages, got a number"),
    ({"prompt": "q", "chosen": "", "rejected": "y"}, "column 'chosen' is empty"),
    ({"prompt": "q", "rejected": "y", "chosen": [{"role": "assistant", "content": "x"}]},
     "'chosen' and 'rejected' must both be strings or both be message lists"),
    ({"prompt": [{"role": "robot", "content": "q"}], "chosen": [{"role": "assistant", "content": "x"}],
      "rejected": [{"role": "assistant", "content": "y"}]}, "column 'prompt'[0].role must be one of"),
    ({"prompt": [{"role": "user"}], "chosen": [{"role": "assistant", "content": "x"}],
      "rejected": [{"role": "assistant", "content": "y"}]}, "column 'prompt'[0] must be an object with 'role' and"),
    ({"prompt": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
      "chosen": [{"role": "assistant", "content": "x"}], "rejected": [{"role": "assistant", "content": "y"}]},
     "prompt: a prompt must end with a user message"),
    ({"prompt": [{"role": "user", "content": "q"}], "chosen": "x", "rejected": "y"},
     "a conversational 'prompt' needs 'chosen' and 'rejected' as message lists"),
    ({"chosen": "x"}, "missing column 'rejected'"),
]


@pytest.mark.parametrize(("row", "fragment"), BAD_ROWS, ids=[f"trl-{i}" for i in range(len(BAD_ROWS))])
def test_bad_trl_rows_name_file_and_line(tmp_path, row, fragment):
    path = write_rows(tmp_path / "rows.jsonl", [TRL_OK, row])
    with pytest.raises(DataError) as info, bad_rows.collecting("refuse"):
        load_jsonl(path, ["helpful"])
    message = str(info.value)
    assert message.startswith(f"{path}:2: "), message
    assert fragment in message and "\n" not in message


def test_the_label_stage_runs_only_with_one_dataset_per_objective():
    from sipo.pipeline import plan

    hh = plan(load_config(ROOT / "configs" / "smoke-hh.yaml", ["run_dir=unused"]))
    ids = [s.id for s in hh]
    assert ids.index("dpo") < ids.index("label") < ids.index("r1/sample")
    assert "label" in next(s for s in hh if s.id == "r1/sample").upstream
    smoke = plan(load_config(ROOT / "configs" / "smoke.yaml", ["run_dir=unused"]))
    assert "label" not in [s.id for s in smoke]
    no_sipo = plan(load_config(ROOT / "configs" / "smoke-hh.yaml", ["run_dir=unused", "methods=[sft,dpo,mod]"]))
    assert "label" not in [s.id for s in no_sipo]
