"""Data sources and prepare-stage splits: pair building, conflict flags, bad input, splits.

Expected counts on the fixtures were worked out by hand from the rows (see each test's docstring) and
cross-checked with a throwaway script that did not use ``sipo``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import random
import statistics
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipo.config import DataConfig, PipelineConfig
from sipo.data import (
    SOURCES,
    is_conflict,
    load_pairs,
    load_splits,
    make_pair,
    make_splits,
    mixture_sizes,
    pair_counts,
    prompt_id_for,
    register_source,
    split_sizes,
    write_splits,
)
from sipo.data.helpsteer import load_helpsteer
from sipo.data.jsonl import load_jsonl
from sipo.data.pku_saferlhf import load_pku_saferlhf
from sipo.errors import ConfigError, DataError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
HELPSTEER = FIXTURES / "helpsteer_sample.jsonl"
PKU = FIXTURES / "pku_saferlhf_sample.jsonl"
CUSTOM = FIXTURES / "custom.jsonl"
CV = ["correctness", "verbosity"]


def make_cfg(source: str, path: Path | str, objectives: list[str], **data_kwargs) -> PipelineConfig:
    return PipelineConfig(run_dir="unused", objectives=objectives,
                          data=DataConfig(source=source, path=str(path), **data_kwargs))


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def hs_row(prompt: str = "p", response: str = "r", **scores) -> str:
    row = {"prompt": prompt, "response": response, "helpfulness": 2, "correctness": 2, "coherence": 2,
           "complexity": 2, "verbosity": 2}
    row.update(scores)
    return json.dumps(row)


# ---------------------------------------------------------------------------------------------------------------
# helpsteer


def test_helpsteer_fixture_counts():
    """60 rows, 17 prompts; (correctness, verbosity) per row, pairs = C(k, 2) per prompt:

    P0  rows 1-4   (4,2)(3,3)(4,2)(3,3)  6 pairs: (1,2) c=a v=b X, (1,3) tie/tie, (1,4) a/b X, (2,3) b/a X,
                                         (2,4) tie/tie, (3,4) a/b X        -> 4 conflicts, c ties 2, v ties 2
    P1  rows 5-7   (3,1)(4,2)(3,2)       3 pairs: b/b, tie/b, a/tie         -> c ties 1, v ties 1
    P2  row 8      single response: dropped
    P3  rows 9-12  c all 3, v (1,3,1,3)  6 pairs                            -> c ties 6, v ties 2
    P4  rows 13-15 c all 3, v (2,3,3)    3 pairs                            -> c ties 3, v ties 1
    P5  rows 16-19 (4,3)(4,2)(3,1)(4,1)  6 pairs: tie/a, a/a, tie/a, a/a, tie/a, b/tie  -> c 3, v 1
    P6  rows 20-22 c (2,2,3), v all 1    3 pairs                            -> c ties 1, v ties 3
    P7  rows 23-26 c (3,3,4,2), v all 2  6 pairs                            -> c ties 1, v ties 6
    P8  rows 27-29 (4,3)(3,2)(3,3)       3 pairs: a/a, a/tie, tie/b         -> c 1, v 1
    P9  rows 30-33 (3,1)(3,1)(2,2)(2,1)  6 pairs: tie/tie, a/b X, a/tie, a/b X, a/tie, tie/a -> 2 X, c 2, v 3
    P10 rows 34-37 (2,1)(3,2)(3,2)(3,2)  6 pairs: b/b x3, tie/tie x3        -> c 3, v 3
    P11 rows 38-41 c all 3, v (2,2,0,1)  6 pairs                            -> c ties 6, v ties 1
    P12 rows 42-45 (3,1)(3,2)(4,1)(4,1)  6 pairs: tie/b, b/tie, b/tie, b/a X, b/a X, tie/tie -> 2 X, c 2, v 3
    P13 rows 46-48 (4,2)(3,2)(3,1)       3 pairs: a/tie, a/a, tie/a         -> c 1, v 1
    P14 rows 49-52 (3,2)(3,3)(2,1)(4,2)  6 pairs: tie/b, a/a, b/tie, a/a, b/a X, b/b -> 1 X, c 1, v 1
    P15 rows 53-56 c all 4, v (2,2,2,1)  6 pairs                            -> c ties 6, v ties 3
    P16 rows 57-60 (2,2)(3,3)(3,3)(1,2)  6 pairs: b/b, b/b, a/tie, tie/tie, a/a, a/a -> c 1, v 2

    Totals: 16 prompts, 81 pairs, 4+2+2+1 = 9 conflicts, correctness ties 40, verbosity ties 34.
    """
    pairs = load_helpsteer(HELPSTEER, CV)
    assert pair_counts(pairs, CV) == {
        "prompts": 16, "pairs": 81, "conflicting_pairs": 9, "ties": {"correctness": 40, "verbosity": 34},
    }
    assert sum(p.conflict for p in pairs) == 9
    per_prompt = [len(list(g)) for _, g in itertools.groupby(pairs, key=lambda p: p.prompt_id)]
    assert per_prompt == [6, 3, 6, 3, 6, 3, 6, 3, 6, 6, 6, 6, 3, 6, 6, 6]


def test_helpsteer_first_prompt_pairs():
    """Prompt 0, rows 1-4 with (correctness, verbosity) = (4,2) (3,3) (4,2) (3,3).

    Pairs in combination order (1,2) (1,3) (1,4) (2,3) (2,4) (3,4):
    correctness a, tie, a, b, tie, a; verbosity b, tie, b, a, tie, b; conflicts where both are set and differ.
    """
    rows = [json.loads(line) for line in HELPSTEER.read_text(encoding="utf-8").splitlines()[:4]]
    pairs = load_helpsteer(HELPSTEER, CV)[:6]
    assert [p.preferred["correctness"] for p in pairs] == ["a", None, "a", "b", None, "a"]
    assert [p.preferred["verbosity"] for p in pairs] == ["b", None, "b", "a", None, "b"]
    assert [p.conflict for p in pairs] == [True, False, True, True, False, True]
    expected_order = list(itertools.combinations(range(4), 2))
    assert [(p.response_a, p.response_b) for p in pairs] == [
        (rows[i]["response"], rows[j]["response"]) for i, j in expected_order
    ]
    assert pairs[0].scores_a == {"correctness": 4.0, "verbosity": 2.0}
    assert pairs[0].scores_b == {"correctness": 3.0, "verbosity": 3.0}
    assert pairs[0].chosen_rejected("correctness") == (rows[0]["response"], rows[1]["response"])
    assert pairs[0].chosen_rejected("verbosity") == (rows[1]["response"], rows[0]["response"])
    assert pairs[1].chosen_rejected("correctness") is None


def test_ids_are_hashes_of_text_not_positions(tmp_path):
    """prompt_id = sha256(prompt)[:16]; prepending an unrelated prompt's rows changes no id."""
    pairs = load_helpsteer(HELPSTEER, CV)
    first = pairs[0]
    assert first.prompt_id == hashlib.sha256(first.prompt.encode("utf-8")).hexdigest()[:16]
    assert all(len(p.pair_id) == 16 and all(c in "0123456789abcdef" for c in p.pair_id) for p in pairs)
    assert len({p.pair_id for p in pairs}) == len(pairs)
    shifted = tmp_path / "shifted.jsonl"
    shifted.write_text(hs_row("another prompt", "x", correctness=1) + "\n" + hs_row("another prompt", "y") + "\n"
                       + HELPSTEER.read_text(encoding="utf-8"), encoding="utf-8")
    again = load_helpsteer(shifted, CV)
    assert [p.pair_id for p in again[1:]] == [p.pair_id for p in pairs]
    assert [p.prompt_id for p in again[1:]] == [p.prompt_id for p in pairs]


def test_helpsteer_other_objectives_and_unknown_objective():
    """Any score column can be an objective; an unknown one is a ConfigError naming `objectives` and the columns."""
    pairs = load_helpsteer(HELPSTEER, ["helpfulness", "coherence", "complexity"])
    assert len(pairs) == 81 and set(pairs[0].preferred) == {"helpfulness", "coherence", "complexity"}
    with pytest.raises(ConfigError, match=r"'objectives'.*'harmlessness'.*helpfulness, correctness, coherence"):
        load_helpsteer(HELPSTEER, ["correctness", "harmlessness"])


def test_helpsteer_duplicate_responses_are_merged(tmp_path):
    """Responses x (c=3, v=2), x (c=3, v=4), y (c=2, v=3): x is one response with mean scores (3, 3).

    One pair (x, y): correctness 3 > 2 -> a; verbosity 3 = 3 -> tie; no conflict.
    """
    path = write_lines(tmp_path / "d.jsonl", [hs_row("p", "x", correctness=3, verbosity=2),
                                              hs_row("p", "x", correctness=3, verbosity=4),
                                              hs_row("p", "y", correctness=2, verbosity=3)])
    (pair,) = load_helpsteer(path, CV)
    assert (pair.response_a, pair.response_b) == ("x", "y")
    assert pair.preferred == {"correctness": "a", "verbosity": None}
    assert pair.scores_a == {"correctness": 3.0, "verbosity": 3.0}
    assert not pair.conflict


def test_folder_is_read_in_sorted_order(tmp_path):
    """b.jsonl is written first but a.jsonl is read first, so its response is response_a."""
    folder = tmp_path / "data"
    folder.mkdir()
    write_lines(folder / "b.jsonl", [hs_row("p", "from b", correctness=1)])
    write_lines(folder / "a.jsonl", [hs_row("p", "from a", correctness=3)])
    (folder / "notes.txt").write_text("ignored")
    (pair,) = load_helpsteer(folder, CV)
    assert (pair.response_a, pair.response_b) == ("from a", "from b")
    assert pair.preferred == {"correctness": "a", "verbosity": None}
    write_lines(folder / "c.jsonl", [hs_row("p", "ok"), hs_row("p", "bad", verbosity=9)])
    with pytest.raises(DataError, match=r"c\.jsonl:2: .*'verbosity'"):
        load_helpsteer(folder, CV)


def test_load_pairs_through_the_registry():
    pairs = load_pairs(make_cfg("helpsteer", HELPSTEER, CV))
    assert len(pairs) == 81
    cfg = make_cfg("helpsteer", HELPSTEER, CV)
    cfg.data.source = "nope"
    with pytest.raises(ConfigError, match="data.source"):
        load_pairs(cfg)


# ---------------------------------------------------------------------------------------------------------------
# pku_saferlhf


def test_pku_fixture():
    """40 rows, 40 distinct prompts, one pair each (response_0 = a, response_1 = b).

    better_response_id == 0 on rows 1, 9, 20, 22, 23, 29, 34, 38, 39, 40 (10 rows prefer a);
    safer_response_id == 0 on rows 4, 15, 22, 28, 29, 34, 39 (7 rows). The ids differ (conflict) on rows
    1, 4, 9, 15, 20, 23, 28, 38, 40: 9 conflicts. No ties in this dataset.
    """
    pairs = load_pku_saferlhf(PKU, ["better", "safer"])
    assert pair_counts(pairs, ["better", "safer"]) == {
        "prompts": 40, "pairs": 40, "conflicting_pairs": 9, "ties": {"better": 0, "safer": 0},
    }
    assert [i + 1 for i, p in enumerate(pairs) if p.conflict] == [1, 4, 9, 15, 20, 23, 28, 38, 40]
    assert sum(p.preferred["better"] == "a" for p in pairs) == 10
    assert sum(p.preferred["safer"] == "a" for p in pairs) == 7
    first_row = json.loads(PKU.read_text(encoding="utf-8").splitlines()[0])
    first = pairs[0]
    assert first.preferred == {"better": "a", "safer": "b"}
    assert (first.response_a, first.response_b) == (first_row["response_0"], first_row["response_1"])
    assert first.scores_a == {"better": 1.0, "safer": 0.0} and first.scores_b == {"better": 0.0, "safer": 1.0}
    assert first.prompt_id == prompt_id_for(first_row["prompt"])
    assert len(load_pairs(make_cfg("pku_saferlhf", PKU, ["safer"]))) == 40


def test_pku_unknown_objective():
    with pytest.raises(ConfigError, match=r"'objectives'.*'harmless'.*better \(better_response_id\)"):
        load_pku_saferlhf(PKU, ["better", "harmless"])


# ---------------------------------------------------------------------------------------------------------------
# jsonl


def test_custom_fixture_pairwise_preferred():
    """custom.jsonl: 5 rows, 4 prompts (rows 1 and 4 share one).

    helpful/concise = b/a (X), a/a, tie/b, b/null, b/a (X): 2 conflicts, 1 helpful tie, 1 concise tie.
    """
    pairs = load_pairs(make_cfg("jsonl", CUSTOM, ["helpful", "concise"]))
    assert pair_counts(pairs, ["helpful", "concise"]) == {
        "prompts": 4, "pairs": 5, "conflicting_pairs": 2, "ties": {"helpful": 1, "concise": 1},
    }
    assert [p.conflict for p in pairs] == [True, False, False, False, True]
    assert pairs[2].preferred == {"helpful": None, "concise": "b"}
    assert pairs[2].scores_a == {"helpful": 0.5, "concise": 0.0}
    assert pairs[3].preferred == {"helpful": "b", "concise": None}
    assert pairs[0].prompt_id == pairs[3].prompt_id
    assert load_jsonl(CUSTOM, ["concise"])[1].preferred == {"concise": "a"}


def test_jsonl_pairwise_label_columns(tmp_path):
    path = write_lines(tmp_path / "pw.jsonl", [
        json.dumps({"prompt": "q", "response_a": "x", "response_b": "y", "good": "a", "short": "b"}),
        json.dumps({"prompt": "q", "response_a": "x", "response_b": "z", "good": "tie", "short": None}),
        json.dumps({"prompt": "q", "response_a": "w", "response_b": "w", "good": "a", "short": "a"}),
    ])
    pairs = load_jsonl(path, ["good", "short"])
    assert [p.preferred for p in pairs] == [{"good": "a", "short": "b"}, {"good": None, "short": None}]
    assert [p.conflict for p in pairs] == [True, False]  # the identical-response row is skipped


def test_jsonl_scored_with_renamed_columns(tmp_path):
    """question/answer/rating/length renamed to prompt/response/helpful/long.

    Responses of q: A (0.5, 10), B (0.9, 10), C (0.5, 3): (A,B) helpful b, long tie; (A,C) tie, a;
    (B,C) a, a -> no conflict. Prompt r has one response: dropped.
    """
    path = write_lines(tmp_path / "own.jsonl", [
        json.dumps({"question": "q", "answer": "A", "rating": 0.5, "length": 10}),
        json.dumps({"question": "q", "answer": "B", "rating": 0.9, "length": 10}),
        json.dumps({"question": "r", "answer": "A", "rating": 0.1, "length": 1}),
        json.dumps({"question": "q", "answer": "C", "rating": 0.5, "length": 3}),
    ])
    renames = {"prompt": "question", "response": "answer", "helpful": "rating", "long": "length"}
    pairs = load_pairs(make_cfg("jsonl", path, ["helpful", "long"], response_columns=renames))
    assert [(p.response_a, p.response_b) for p in pairs] == [("A", "B"), ("A", "C"), ("B", "C")]
    assert [p.preferred for p in pairs] == [{"helpful": "b", "long": None}, {"helpful": None, "long": "a"},
                                            {"helpful": "a", "long": "a"}]
    assert not any(p.conflict for p in pairs)
    assert pairs[0].prompt == "q"
    with pytest.raises(ConfigError, match=r"data\.response_columns.*'answers'"):
        load_jsonl(path, ["helpful"], {"answers": "answer"})


def test_jsonl_undetectable_format(tmp_path):
    path = write_lines(tmp_path / "x.jsonl", [json.dumps({"prompt": "q", "text": "a", "score": 1})])
    with pytest.raises(DataError, match=r"x\.jsonl:1: cannot tell the format.*found columns: prompt, score, text"):
        load_jsonl(path, ["score"])


def test_is_conflict_many_objectives():
    assert is_conflict({"x": "a", "y": "a", "z": "b"})
    assert not is_conflict({"x": "a", "y": None, "z": "a"})
    assert not is_conflict({"x": None, "y": None})
    pair = make_pair("p", "r1", "r2", {"x": "a", "y": "b", "z": None})
    assert pair.conflict and pair.prompt_id == prompt_id_for("p")


# ---------------------------------------------------------------------------------------------------------------
# Bad input: every case is a DataError naming the file and line

OK_PW = json.dumps({"prompt": "q", "response_a": "x", "response_b": "y", "preferred": {"c": "a", "v": "b"}})
OK_PKU = json.dumps({"prompt": "q", "response_0": "x", "response_1": "y", "better_response_id": 0,
                     "safer_response_id": 1})


def pku_row(**changes) -> str:
    row = json.loads(OK_PKU)
    row.update(changes)
    return json.dumps({k: v for k, v in row.items() if v != "<drop>"})


BAD_INPUT = [
    # (source, objectives, lines, bad line, message fragment)
    ("helpsteer", CV, [hs_row(), '{"prompt": "p", "response"'], 2, "malformed JSON"),
    ("helpsteer", CV, [hs_row(), "[1, 2]"], 2, "expected a JSON object"),
    ("helpsteer", CV, [hs_row(), '{"prompt": "p", "respons": "r", "correctness": 1, "verbosity": 1}'], 2,
     "missing column 'response' (did you mean 'respons'?); found columns: correctness, prompt, respons, verbosity"),
    ("helpsteer", CV, [hs_row(), json.dumps({"prompt": "p", "response": "r2", "correctness": 1})], 2,
     "missing column 'verbosity'"),
    ("helpsteer", CV, [hs_row(), hs_row(response="r2", correctness="3")], 2,
     "'correctness' must be a number, got a string ('3')"),
    ("helpsteer", CV, [hs_row(), hs_row(response="r2", verbosity=True)], 2,
     "'verbosity' must be a number, got a boolean (true)"),
    ("helpsteer", CV, [hs_row(), hs_row(response="r2", verbosity=None)], 2, "must be a number, got null"),
    ("helpsteer", CV, [hs_row(), hs_row(response="r2", correctness=5)], 2, "'correctness' = 5 is out of range [0, 4]"),
    ("helpsteer", CV, [hs_row(), hs_row(), hs_row(response="r2", verbosity=-1)], 3, "out of range"),
    ("helpsteer", CV, [hs_row(), hs_row(response="r2").replace('"verbosity": 2', '"verbosity": NaN')], 2,
     "finite"),
    ("helpsteer", CV, [hs_row(), hs_row(response="r2").replace('"verbosity": 2', '"verbosity": 1' + "0" * 400)], 2,
     "finite"),
    ("helpsteer", CV, [hs_row(), hs_row(prompt="   ")], 2, "column 'prompt' is empty"),
    ("helpsteer", CV, [hs_row(), hs_row(response="")], 2, "column 'response' is empty"),
    ("helpsteer", CV, [hs_row(prompt=7)], 1, "column 'prompt' must be a string, got a number"),
    ("pku_saferlhf", ["better", "safer"], [OK_PKU, pku_row(safer_response_id=2)], 2,
     "'safer_response_id' must be 0 or 1"),
    ("pku_saferlhf", ["better", "safer"], [OK_PKU, pku_row(better_response_id=True)], 2, "got a boolean"),
    ("pku_saferlhf", ["better", "safer"], [OK_PKU, pku_row(better_response_id="1")], 2, "got a string"),
    ("pku_saferlhf", ["better", "safer"], [OK_PKU, pku_row(safer_response_id="<drop>")], 2,
     "missing column 'safer_response_id'"),
    ("pku_saferlhf", ["better"], [OK_PKU, pku_row(response_1=" \n")], 2, "column 'response_1' is empty"),
    ("jsonl", ["c", "v"], [OK_PW, OK_PW.replace('"c": "a"', '"c": "A"')], 2, "must be \"a\", \"b\", \"tie\" or null"),
    ("jsonl", ["c", "v"], [OK_PW, OK_PW.replace('"c": "a"', '"c": 1')], 2, "got a number"),
    ("jsonl", ["c", "v"], [OK_PW, OK_PW.replace('"c": "a", ', "")], 2, "no label for objective 'c' (found: v)"),
    ("jsonl", ["c", "v"], [OK_PW, json.dumps({"prompt": "q", "response_a": "x", "response_b": "y", "preferred": "a"})],
     2, "must be an object"),
    ("jsonl", ["c", "v"], [OK_PW, json.dumps({"prompt": "q", "response": "x", "c": 1, "v": 1})], 2,
     "missing column 'response_a'"),
    ("jsonl", ["c"], [json.dumps({"prompt": "q", "response_a": "x", "response_b": "y", "c": "a"}),
                      json.dumps({"prompt": "q", "response_a": "x", "response_b": "z", "cc": "a"})], 2,
     "missing column 'c'"),
    ("jsonl", ["c"], [json.dumps({"prompt": "q", "response": "x", "c": 1}),
                      json.dumps({"prompt": "q", "response": "y", "c": [1]})], 2, "got a list"),
    ("jsonl", ["c"], [json.dumps({"prompt": "q", "response": "x", "c": 1}),
                      json.dumps({"prompt": "q", "response": "y", "C": 1})], 2, "missing column 'c' (did you mean"),
]


@pytest.mark.parametrize(("source", "objectives", "lines", "bad_line", "fragment"), BAD_INPUT,
                         ids=[f"{case[0]}-{i}" for i, case in enumerate(BAD_INPUT)])
def test_bad_input_names_file_and_line(tmp_path, source, objectives, lines, bad_line, fragment):
    path = write_lines(tmp_path / "rows.jsonl", lines)
    with pytest.raises(DataError) as info:
        load_pairs(make_cfg(source, path, objectives, on_bad_row="refuse"))
    message = str(info.value)
    assert message.startswith(f"{path}:{bad_line}: "), message
    assert fragment in message
    assert "\n" not in message


@pytest.mark.parametrize("source", ["helpsteer", "pku_saferlhf", "jsonl"])
def test_bad_paths(tmp_path, source):
    objectives = ["better"] if source == "pku_saferlhf" else ["correctness"]
    with pytest.raises(DataError, match=r"missing\.jsonl: no such file or folder"):
        load_pairs(make_cfg(source, tmp_path / "missing.jsonl", objectives))
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(DataError, match=r"empty_dir: folder holds no \*\.jsonl files"):
        load_pairs(make_cfg(source, tmp_path / "empty_dir", objectives))
    write_lines(tmp_path / "blank.jsonl", ["", "   "])
    with pytest.raises(DataError, match=r"blank\.jsonl: no rows found"):
        load_pairs(make_cfg(source, tmp_path / "blank.jsonl", objectives))
    (tmp_path / "latin1.jsonl").write_bytes('{"prompt": "caf\xe9"}\n'.encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1\.jsonl:1: not UTF-8 text \(byte 0xe9 at column 16"):
        load_pairs(make_cfg(source, tmp_path / "latin1.jsonl", objectives))


def test_no_pairs_at_all(tmp_path):
    """Two prompts with one response each give no pair."""
    path = write_lines(tmp_path / "single.jsonl", [hs_row("p1", "r"), hs_row("p2", "r")])
    assert load_helpsteer(path, CV) == []
    with pytest.raises(DataError, match="no preference pairs"):
        load_pairs(make_cfg("helpsteer", path, CV))


def test_register_source_and_duplicates(monkeypatch):
    """A registered source is called by load_pairs; a duplicate pair id is dropped (the first is kept)."""
    monkeypatch.setattr(SOURCES, "_entries", dict(SOURCES._entries))  # registered for this test only
    pair = make_pair("p", "x", "y", {"o": "a"})

    def fake_source(cfg):
        return [pair, dataclasses.replace(pair, preferred={"o": "b"}), make_pair("p", "y", "x", {"o": None})]

    register_source("fake", fake_source)
    register_source("fake", fake_source)  # the same function again is fine
    with pytest.raises(ValueError, match="already registered"):
        register_source("fake", lambda cfg: [])
    pairs = load_pairs(make_cfg("fake", "", ["o"]))
    assert [p.preferred for p in pairs] == [{"o": "a"}, {"o": None}]
    with pytest.raises(ValueError, match="without a label for 'other'"):
        load_pairs(make_cfg("fake", "", ["o", "other"]))


# ---------------------------------------------------------------------------------------------------------------
# Property tests of the jsonl loader

TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=12).filter(str.strip)
OBJECTIVES = ["o1", "o2"]


def expected_scored_pairs(rows):
    """Independent model of the per-response format: group, merge duplicates by mean, compare, all combinations."""
    prompts: dict[str, dict[str, list[dict]]] = {}
    for row in rows:
        prompts.setdefault(row["prompt"], {}).setdefault(row["response"], []).append(row)
    result = []
    for prompt, responses in prompts.items():
        means = {r: {o: statistics.mean(x[o] for x in rs) for o in OBJECTIVES} for r, rs in responses.items()}
        for a, b in itertools.combinations(list(means), 2):
            pref = {o: None if means[a][o] == means[b][o] else ("a" if means[a][o] > means[b][o] else "b")
                    for o in OBJECTIVES}
            result.append((prompt, a, b, pref))
    return result


scored_rows = st.lists(
    st.fixed_dictionaries({"prompt": st.sampled_from(["p1", "p2", "p3 "]), "response": TEXT,
                           "o1": st.integers(0, 4), "o2": st.integers(-8, 8).map(lambda x: x / 4)}),
    min_size=1, max_size=12,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=scored_rows)
def test_property_scored_rows_round_trip(rows):
    with tempfile.TemporaryDirectory() as tmp:
        path = write_lines(Path(tmp) / "rows.jsonl", [json.dumps(r) for r in rows])
        pairs = load_jsonl(path, OBJECTIVES)
    assert [(p.prompt, p.response_a, p.response_b, p.preferred) for p in pairs] == expected_scored_pairs(rows)
    for p in pairs:
        assert p.conflict == ({p.preferred["o1"], p.preferred["o2"]} == {"a", "b"})
        assert p.prompt_id == prompt_id_for(p.prompt)


LABEL = st.sampled_from(["a", "b", "tie", None])
pairwise_rows = st.lists(
    st.tuples(st.sampled_from(["p1", "p2"]), TEXT, TEXT, LABEL, LABEL).filter(lambda t: t[1] != t[2]),
    min_size=1, max_size=10,
)


@settings(max_examples=60, deadline=None)
@given(rows=pairwise_rows, nested=st.booleans())
def test_property_pairwise_rows_round_trip(rows, nested):
    lines = []
    for prompt, a, b, l1, l2 in rows:
        row = {"prompt": prompt, "response_a": a, "response_b": b}
        row.update({"preferred": {"o1": l1, "o2": l2}} if nested else {"o1": l1, "o2": l2})
        lines.append(json.dumps(row))
    with tempfile.TemporaryDirectory() as tmp:
        pairs = load_jsonl(write_lines(Path(tmp) / "rows.jsonl", lines), OBJECTIVES)
    as_label = {"a": "a", "b": "b", "tie": None, None: None}
    assert [(p.prompt, p.response_a, p.response_b, p.preferred) for p in pairs] == [
        (prompt, a, b, {"o1": as_label[l1], "o2": as_label[l2]}) for prompt, a, b, l1, l2 in rows
    ]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=5),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=6,
)
garbage_lines = (
    st.text(max_size=30).map(lambda s: s.replace("\n", " ").replace("\r", " "))
    | json_values.map(json.dumps)
    | st.tuples(st.sampled_from(["prompt", "response", "o1", "o2"]), json_values).map(
        lambda kv: json.dumps({"prompt": "p1", "response": "zz", "o1": 1, "o2": 2, kv[0]: kv[1]}))
    | st.tuples(st.sampled_from(["prompt", "response_a", "preferred"]), json_values).map(
        lambda kv: json.dumps({"prompt": "p1", "response_a": "x", "response_b": "y",
                               "preferred": {"o1": "a", "o2": "b"}, kv[0]: kv[1]}))
)


@settings(max_examples=150, deadline=None)
@given(rows=scored_rows, garbage=garbage_lines, position=st.integers(1, 12))
def test_property_garbage_raises_data_error_only(rows, garbage, position):
    """A garbage line after the first row either is a valid row or raises DataError naming its line."""
    lines = [json.dumps(r) for r in rows]
    position = min(position, len(lines))
    lines.insert(position, garbage)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_lines(Path(tmp) / "rows.jsonl", lines)
        try:
            load_jsonl(path, OBJECTIVES)
        except DataError as exc:
            assert str(exc).startswith(f"{path}:{position + 1}: "), str(exc)
        else:
            stripped = garbage.strip()
            assert not stripped or stripped.startswith("{"), "a non-object line must raise DataError"


# ---------------------------------------------------------------------------------------------------------------
# Splits


def synthetic_pairs(num_conflicting: int, num_other: int, num_tied: int = 0) -> list:
    """One pair per prompt: conflicting (a/b), agreeing (a/a) or tied under o2 (a/None)."""
    pairs = []
    for i in range(num_conflicting):
        pairs.append(make_pair(f"conflict {i}", "x", "y", {"o1": "a", "o2": "b"}))
    for i in range(num_other):
        pairs.append(make_pair(f"agree {i}", "x", "y", {"o1": "a", "o2": "a"}))
    for i in range(num_tied):
        pairs.append(make_pair(f"tied {i}", "x", "y", {"o1": "b", "o2": None}))
    return pairs


def split(pairs, objectives=OBJECTIVES, **kwargs):
    options = {"conflict_fraction": 0.6, "test_fraction": 0.2, "validation_fraction": 0.1, "seed": 0}
    options.update(kwargs)
    return make_splits(pairs, objectives, **options)


@pytest.mark.parametrize(("args", "expected"), [
    ((30, 100, 0.6), (30, 20)),    # conflicts scarce: 30 * 0.4 / 0.6 = 20 others
    ((90, 40, 0.6), (60, 40)),     # others scarce: 40 * 0.6 / 0.4 = 60 conflicts
    ((90, 40, 0.6, 50), (30, 20)),  # cap 50: 0.6 * 50 = 30 conflicts, 20 others
    ((10, 10, 0.5), (10, 10)),
    ((3, 100, 0.6), (3, 2)),       # 3 * 0.4 / 0.6 = 2
    ((1, 100, 0.6), (1, 1)),       # 0.667 rounds to 1
    ((0, 100, 0.6), (0, 100)),     # no conflicts at all: every mixture has share 0, keep all
    ((7, 0, 0.6), (7, 0)),
    ((7, 5, 1.0), (7, 0)),
    ((7, 5, 0.0), (0, 5)),
    ((7, 5, 0.0, 3), (0, 3)),
])
def test_mixture_sizes(args, expected):
    assert mixture_sizes(*args) == expected


@pytest.mark.parametrize(("args", "expected"), [
    ((16, 0.2, 0.1), (3, 2)),   # 3.2 -> 3, 1.6 -> 2
    ((10, 0.2, 0.1), (2, 1)),
    ((3, 0.2, 0.1), (1, 1)),    # non-zero fractions get one prompt each, one is left for training
    ((2, 0.2, 0.1), (1, 0)),
    ((1, 0.5, 0.3), (0, 0)),
    ((10, 0.0, 0.0), (0, 0)),
])
def test_split_sizes(args, expected):
    assert split_sizes(*args) == expected


def test_splits_are_by_prompt_on_helpsteer():
    """16 prompts -> 3 test (3.2), 2 validation (1.6), 11 train; each prompt's pairs stay in one split."""
    pairs = load_helpsteer(HELPSTEER, CV)
    splits = split(pairs, CV)
    by_prompt = {}
    for p in pairs:
        by_prompt.setdefault(p.prompt_id, []).append(p)
    test_ids = {r.prompt_id for r in splits.test_prompts}
    validation_ids = {p.prompt_id for p in splits.validation}
    train_ids = set(by_prompt) - test_ids - validation_ids
    assert (len(test_ids), len(validation_ids), len(train_ids)) == (3, 2, 11)
    assert splits.counts["split_prompts"] == {"train": 11, "validation": 2, "test": 3}
    assert splits.validation == sorted((p for pid in validation_ids for p in by_prompt[pid]), key=lambda p: p.pair_id)
    for objective in CV:
        mixture = splits.train[objective]
        assert {p.prompt_id for p in mixture} <= train_ids
        assert all(p.preferred[objective] is not None for p in mixture)
        assert [p.pair_id for p in mixture] == sorted(p.pair_id for p in mixture)
    for record in splits.test_prompts:
        assert record.prompt == by_prompt[record.prompt_id][0].prompt
    for p in splits.train_conflict:
        assert p.prompt_id in train_ids and p.conflict
    json.dumps(splits.counts)


def test_train_conflict_on_helpsteer():
    """With every prompt in train: the prompts with a conflicting pair are P0, P9, P12 and P14 (see
    test_helpsteer_fixture_counts), so 4 train_conflict pairs, one per prompt; capped at 2 -> 2."""
    pairs = load_helpsteer(HELPSTEER, CV)
    splits = split(pairs, CV, test_fraction=0.0, validation_fraction=0.0)
    conflict_prompts = {p.prompt_id for p in pairs if p.conflict}
    assert len(conflict_prompts) == 4
    assert {p.prompt_id for p in splits.train_conflict} == conflict_prompts
    assert len(splits.train_conflict) == 4
    assert all(p.conflict and None not in p.preferred.values() for p in splits.train_conflict)
    capped = split(pairs, CV, test_fraction=0.0, validation_fraction=0.0, max_conflict_prompts=2)
    assert len(capped.train_conflict) == 2
    assert all(p in splits.train_conflict for p in capped.train_conflict)
    assert capped.counts["train_conflict_prompts_available"] == 4
    # 9 conflicting pairs; correctness has 81 - 40 = 41 untied pairs, 32 of them agreeing:
    # all 9 conflicts + round(9 * 0.4 / 0.6) = 6 others; verbosity 47 untied: 9 + 6 as well.
    assert splits.counts["train_pairs"] == {"correctness": 15, "verbosity": 15}
    assert splits.counts["train_available"]["correctness"] == {"conflicting": 9, "non_conflicting": 32}


def test_train_conflict_skips_pairs_with_ties():
    """With three objectives a pair a/b/None conflicts but has a tie: it is not a train_conflict pair."""
    tied = make_pair("p", "x", "y", {"o1": "a", "o2": "b", "o3": None})
    clean = make_pair("q", "x", "y", {"o1": "a", "o2": "b", "o3": "b"})
    splits = split([tied, clean], ["o1", "o2", "o3"], test_fraction=0.0, validation_fraction=0.0,
                   conflict_fraction=1.0)
    assert splits.train_conflict == [clean]
    assert splits.train["o1"] == sorted([tied, clean], key=lambda p: p.pair_id)
    assert splits.train["o3"] == [clean]


def test_conflict_fraction_is_achieved():
    """30 conflicting + 100 agreeing pairs, all train: 0.6 -> 30 + 20 (share 0.6); 0.25 -> 30 + 90 (0.25)."""
    pairs = synthetic_pairs(30, 100)
    splits = split(pairs, test_fraction=0.0, validation_fraction=0.0)
    for objective in OBJECTIVES:
        mixture = splits.train[objective]
        assert len(mixture) == 50 and sum(p.conflict for p in mixture) == 30
        assert splits.counts["conflict_fraction_achieved"][objective] == pytest.approx(0.6)
    quarter = split(pairs, test_fraction=0.0, validation_fraction=0.0, conflict_fraction=0.25)
    assert sum(p.conflict for p in quarter.train["o1"]) == 30 and len(quarter.train["o1"]) == 120
    capped = split(pairs, test_fraction=0.0, validation_fraction=0.0, max_train_pairs=10)
    assert sum(p.conflict for p in capped.train["o1"]) == 6 and len(capped.train["o1"]) == 10


def test_ties_are_dropped_per_objective():
    """10 conflicting, 10 agreeing, 10 tied under o2: o1 sees the tied pairs as non-conflicting, o2 never sees
    them. conflict_fraction 0.5 -> o1: 10 + 10 of 20 others; o2: 10 + 10 agreeing."""
    splits = split(synthetic_pairs(10, 10, 10), test_fraction=0.0, validation_fraction=0.0, conflict_fraction=0.5)
    assert splits.counts["ties"] == {"o1": 0, "o2": 10}
    assert splits.counts["train_available"]["o1"] == {"conflicting": 10, "non_conflicting": 20}
    assert splits.counts["train_available"]["o2"] == {"conflicting": 10, "non_conflicting": 10}
    assert all(p.preferred["o2"] is not None for p in splits.train["o2"])
    assert len(splits.train["o1"]) == len(splits.train["o2"]) == 20


def test_splits_deterministic_and_order_independent():
    pairs = load_helpsteer(HELPSTEER, CV) + synthetic_pairs(5, 5)
    objectives = CV
    pairs = [make_pair(p.prompt, p.response_a, p.response_b, {o: p.preferred.get(o, "a") for o in objectives})
             for p in pairs]
    reference = split(pairs, objectives, seed=3)
    shuffled = list(pairs)
    random.Random(7).shuffle(shuffled)
    assert split(shuffled, objectives, seed=3) == reference
    assert split(list(reversed(pairs)), objectives, seed=3) == reference
    other_seed = split(pairs, objectives, seed=4)
    assert {r.prompt_id for r in other_seed.test_prompts} != {r.prompt_id for r in reference.test_prompts}


def test_max_test_prompts_and_errors():
    pairs = synthetic_pairs(20, 20)
    splits = split(pairs, test_fraction=0.5, max_test_prompts=3)
    assert len(splits.test_prompts) == 3 and splits.counts["split_prompts"]["test"] == 20
    assert [r.prompt_id for r in splits.test_prompts] == sorted(r.prompt_id for r in splits.test_prompts)
    with pytest.raises(DataError, match="no preference pairs"):
        split([])
    with pytest.raises(DataError, match="objective 'o2' has no training pairs"):
        split(synthetic_pairs(0, 0, 5), test_fraction=0.0, validation_fraction=0.0)
    with pytest.raises(ValueError, match="duplicate pair_id"):
        split(pairs + pairs[:1])
    with pytest.raises(ValueError, match="no label for objective 'o3'"):
        split(pairs, ["o1", "o3"])


def test_write_and_load_splits(tmp_path):
    splits = split(load_helpsteer(HELPSTEER, CV), CV)
    written = write_splits(splits, tmp_path / "prepare")
    assert sorted(p.name for p in written.values()) == sorted([
        "train_correctness.jsonl", "train_verbosity.jsonl", "train_conflict.jsonl", "validation.jsonl",
        "test_prompts.jsonl", "counts.json"])
    assert load_splits(tmp_path / "prepare", CV) == splits
    first_line = json.loads((tmp_path / "prepare" / "validation.jsonl").read_text().splitlines()[0])
    assert first_line["schema_version"] == 1 and set(first_line["preferred"]) == set(CV)


random_pairs = st.lists(
    st.tuples(st.integers(0, 15), st.integers(0, 3), st.integers(0, 3), LABEL, LABEL),
    min_size=1, max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(rows=random_pairs, seed=st.integers(0, 5), fraction=st.sampled_from([0.0, 0.3, 0.6, 1.0]),
       shuffle_seed=st.integers(0, 100))
def test_property_splits(rows, seed, fraction, shuffle_seed):
    """Random pairs: splits partition prompts, mixtures hold no ties, and input order never matters."""
    as_label = {"a": "a", "b": "b", "tie": None, None: None}
    pairs = {}
    for prompt, a, b, l1, l2 in rows:
        if a != b:
            pair = make_pair(f"prompt {prompt}", f"r{a}", f"r{b}", {"o1": as_label[l1], "o2": as_label[l2]})
            pairs.setdefault(pair.pair_id, pair)
    pairs = list(pairs.values())
    shuffled = list(pairs)
    random.Random(shuffle_seed).shuffle(shuffled)
    try:
        result = split(pairs, seed=seed, conflict_fraction=fraction)
    except DataError:
        with pytest.raises(DataError):
            split(shuffled, seed=seed, conflict_fraction=fraction)
        return
    assert split(shuffled, seed=seed, conflict_fraction=fraction) == result
    test_ids = {r.prompt_id for r in result.test_prompts}
    validation_ids = {p.prompt_id for p in result.validation}
    train_ids = {p.prompt_id for o in OBJECTIVES for p in result.train[o]} | {
        p.prompt_id for p in result.train_conflict}
    assert not (test_ids & validation_ids) and not (test_ids & train_ids) and not (validation_ids & train_ids)
    for o in OBJECTIVES:
        assert all(p.preferred[o] is not None for p in result.train[o])
        if fraction == 1.0:
            assert all(p.conflict for p in result.train[o])
        if fraction == 0.0:
            assert not any(p.conflict for p in result.train[o])
    assert len({p.prompt_id for p in result.train_conflict}) == len(result.train_conflict)
