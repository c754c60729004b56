"""Atomic outputs, manifests and hashes (sipo.artifacts) and typed JSONL records (sipo.records)."""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipo.artifacts import RunDir, atomic_path, atomic_write_json, atomic_write_text, file_hash, stable_hash
from sipo.errors import DataError
from sipo.records import (
    SCHEMA_VERSION,
    Candidate,
    CombinedCandidate,
    Pair,
    PromptRecord,
    Review,
    ScoredCandidate,
    ScoreRow,
    Selection,
    iter_json_lines,
    read_jsonl,
    write_jsonl,
)

# --- atomic writes --------------------------------------------------------------------------------------------


def test_atomic_write_leaves_only_the_file(tmp_path):
    atomic_write_text(tmp_path / "out.txt", "hello\n")
    assert (tmp_path / "out.txt").read_text() == "hello\n"
    assert sorted(os.listdir(tmp_path)) == ["out.txt"]


def test_atomic_path_creates_parent_folders(tmp_path):
    atomic_write_text(tmp_path / "a" / "b" / "c.txt", "x")
    assert (tmp_path / "a" / "b" / "c.txt").read_text() == "x"


def test_atomic_path_does_not_clobber_on_exception(tmp_path):
    """A write that fails midway leaves the previous file as it was and no temporary file behind."""
    target = tmp_path / "data.jsonl"
    target.write_text("old\n")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half of the new con")
            raise RuntimeError("killed")
    assert target.read_text() == "old\n"
    assert sorted(os.listdir(tmp_path)) == ["data.jsonl"]


def test_atomic_path_on_exception_creates_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "new.txt") as tmp:
            tmp.write_text("partial")
            raise RuntimeError
    assert os.listdir(tmp_path) == []


def test_atomic_path_replaces_a_folder(tmp_path):
    """Adapters and models are folders: the new one replaces the old one whole (no stale file survives)."""
    target = tmp_path / "adapter"
    target.mkdir()
    (target / "stale.bin").write_text("old")
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "adapter_config.json").write_text("{}")
    assert sorted(os.listdir(target)) == ["adapter_config.json"]
    assert sorted(os.listdir(tmp_path)) == ["adapter"]


def test_atomic_write_json_is_canonical(tmp_path):
    atomic_write_json(tmp_path / "m.json", {"b": 1, "a": [1, 2], "é": "ü"})
    text = (tmp_path / "m.json").read_text(encoding="utf-8")
    assert text.endswith("\n")
    assert text.index('"a"') < text.index('"b"')
    assert "ü" in text  # not \u-escaped
    assert json.loads(text) == {"a": [1, 2], "b": 1, "é": "ü"}


def test_write_jsonl_failing_generator_keeps_previous_file(tmp_path):
    path = tmp_path / "rows.jsonl"
    write_jsonl(path, [PromptRecord("p1", "old")])

    def rows():
        yield PromptRecord("p2", "new")
        raise RuntimeError("crash while producing rows")

    with pytest.raises(RuntimeError):
        write_jsonl(path, rows())
    assert read_jsonl(path, PromptRecord) == [PromptRecord("p1", "old")]
    assert sorted(os.listdir(tmp_path)) == ["rows.jsonl"]


# --- hashes ---------------------------------------------------------------------------------------------------


def test_stable_hash_ignores_dict_key_order():
    a = {"x": 1, "y": {"p": [1, 2], "q": None}}
    b = {"y": {"q": None, "p": [1, 2]}, "x": 1}
    assert stable_hash(a) == stable_hash(b)
    assert len(stable_hash(a)) == 16 and all(c in "0123456789abcdef" for c in stable_hash(a))


def test_stable_hash_sees_values_and_list_order():
    assert stable_hash({"x": 1}) != stable_hash({"x": 2})
    assert stable_hash({"x": 1}) != stable_hash({"x": 1.5})
    assert stable_hash([1, 2]) != stable_hash([2, 1])
    assert stable_hash({"alpha": 0.1}) == stable_hash({"alpha": 0.1})


@given(st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=6))
def test_stable_hash_of_any_key_order(d):
    assert stable_hash(d) == stable_hash(dict(reversed(list(d.items()))))


def test_file_hash(tmp_path):
    (tmp_path / "a").write_bytes(b"abc")
    (tmp_path / "b").write_bytes(b"abc")
    (tmp_path / "c").write_bytes(b"abd")
    assert file_hash(tmp_path / "a") == file_hash(tmp_path / "b") != file_hash(tmp_path / "c")


# --- run directory --------------------------------------------------------------------------------------------


def test_run_dir_manifests(tmp_path):
    run = RunDir(tmp_path / "run")
    assert run.stage_dir("r1/sample") == tmp_path / "run" / "r1" / "sample"
    assert (tmp_path / "run" / "r1" / "sample").is_dir()
    assert run.read_manifest("r1/sample") is None
    run.write_manifest("r1/sample", {"fingerprint": "abc", "counts": {"candidates": 12}})
    assert run.read_manifest("r1/sample")["counts"] == {"candidates": 12}
    run.invalidate("r1/sample")
    assert run.read_manifest("r1/sample") is None
    run.invalidate("r1/sample")  # forgetting twice is fine


def test_a_corrupt_manifest_reads_as_unfinished(tmp_path):
    run = RunDir(tmp_path)
    run.stage_dir("dpo")
    run.manifest_path("dpo").write_text('{"fingerprint": ')
    assert run.read_manifest("dpo") is None


# --- records --------------------------------------------------------------------------------------------------

CANDIDATE = Candidate(candidate_id="p1:a0.2-b0.8", prompt_id="p1", prompt="Tell me about Ava.\nBriefly.",
                      response="Ava lives in Rome.\n\nHer pet is a cat ✓", weights={"a": 0.2, "b": 0.8})
REWRITE = Candidate(candidate_id="p1:a0.2-b0.8", prompt_id="p1", prompt="Tell me about Ava.\nBriefly.",
                    response="Ava lives in Oslo.", weights={"a": 0.2, "b": 0.8}, source="rewrite")

RECORDS = [
    Pair(pair_id="x1", prompt_id="p1", prompt="Q?", response_a="A", response_b="B",
         preferred={"a": "a", "b": "b", "c": None}, scores_a={"a": 4.0, "b": 1.0}, scores_b={"a": 2.0, "b": 3.0},
         conflict=True),
    PromptRecord(prompt_id="p1", prompt="Q?"),
    CANDIDATE,
    Review(candidate_id="p1:a0.2-b0.8", prompt_id="p1", review="Name the city.", raw="Review: Name the city."),
    ScoredCandidate(candidate=CANDIDATE, scores={"a": -0.5, "b": 1.25}),
    CombinedCandidate(candidate=REWRITE, scores={"a": 0.1, "b": 0.2}, original_scores={"a": 0.0, "b": 0.3},
                      rewrite_scores={"a": 0.1, "b": 0.2}, replaced=True),
    CombinedCandidate(candidate=CANDIDATE, scores={"a": 0.0, "b": 0.3}, original_scores={"a": 0.0, "b": 0.3},
                      rewrite_scores=None, replaced=False),
    Selection(prompt_id="p1", prompt="Q?", response="S", candidate_id="p1:a0.2-b0.8", pair_id="x1",
              response_a="A", response_b="B", judge_scores={"r0_a": 0.5, "soup_r0_a0p2-b0p8": 0.25}),
    ScoreRow(method="sipo", weights={"a": 0.5, "b": 0.5}, prompt_id="p1", response="R",
             scores={"a": 0.1, "b": -0.2}, round=2),
]


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_every_record_type_round_trips(tmp_path, record):
    path = tmp_path / "rows.jsonl"
    assert write_jsonl(path, [record, record]) == 2
    back = read_jsonl(path, type(record))
    assert back == [record, record]
    row = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    assert row["schema_version"] == SCHEMA_VERSION


def test_nested_candidate_comes_back_as_a_candidate(tmp_path):
    write_jsonl(tmp_path / "c.jsonl", [RECORDS[5]])
    (back,) = read_jsonl(tmp_path / "c.jsonl", CombinedCandidate)
    assert isinstance(back.candidate, Candidate)
    assert back.candidate.source == "rewrite"
    assert back.rewrite_scores == {"a": 0.1, "b": 0.2}


def test_defaults_fill_missing_optional_fields_and_extra_keys_are_ignored(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"candidate_id": "c", "prompt_id": "p", "prompt": "q", "response": "r",
                                "weights": {"a": 1.0}, "added_by_a_later_version": 1}) + "\n")
    (back,) = read_jsonl(path, Candidate)
    assert back.source == "mod"


def test_malformed_line_names_file_and_line(tmp_path):
    """Line 1 good, line 2 blank (skipped), line 3 broken."""
    path = tmp_path / "rows.jsonl"
    good = json.dumps({"prompt_id": "p", "prompt": "q"})
    path.write_text(good + "\n\n" + '{"prompt_id": "p2", "prompt": \n')
    with pytest.raises(DataError, match=rf"^{path}:3: malformed JSON"):
        read_jsonl(path, PromptRecord)


def test_non_object_line_and_wrong_row_type(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text("[1, 2]\n")
    with pytest.raises(DataError, match=rf"{path}:1: expected a JSON object"):
        read_jsonl(path, PromptRecord)
    path.write_text(json.dumps({"prompt_id": "p", "prompt": "q"}) + "\n" + json.dumps({"prompt": "q"}) + "\n")
    with pytest.raises(DataError, match=rf"{path}:2: not a PromptRecord row"):
        read_jsonl(path, PromptRecord)


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_jsonl(tmp_path / "nope.jsonl", PromptRecord)


def test_iter_json_lines_reports_line_numbers(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n\n  \n{"a": 2}\n')
    assert list(iter_json_lines(path)) == [(1, {"a": 1}), (4, {"a": 2})]


def test_pair_chosen_rejected():
    pair = RECORDS[0]
    assert pair.chosen_rejected("a") == ("A", "B")
    assert pair.chosen_rejected("b") == ("B", "A")
    assert pair.chosen_rejected("c") is None
    assert pair.chosen_rejected("not an objective") is None


text = st.text(max_size=40)


@given(text, text, st.dictionaries(st.sampled_from(["a", "b", "c"]), st.floats(0, 1), min_size=1))
def test_candidate_round_trip_of_any_text(tmp_path_factory, prompt, response, weights):
    path = tmp_path_factory.mktemp("rt") / "c.jsonl"
    record = Candidate(candidate_id="c", prompt_id="p", prompt=prompt, response=response, weights=weights)
    write_jsonl(path, [record])
    assert read_jsonl(path, Candidate) == [record]
