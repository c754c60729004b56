"""One policy for unusable rows (``data.on_bad_row``) in every format and in ``data.test_path``; the test-set cap;
the report's *Data* section."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sipo.configure import load_config
from sipo.data import bad_rows, load_pairs, make_pair, make_splits, prompt_id_for
from sipo.data.formats import load_test_prompts
from sipo.errors import DataError
from sipo.records import PromptRecord
from sipo.report.build import data_markdown

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "configs" / "smoke.yaml"
HELPSTEER = ROOT / "tests" / "fixtures" / "helpsteer_smoke.jsonl"


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def hh(*turns: str) -> str:
    """An HH-RLHF transcript of alternating Human / Assistant turns."""
    return "".join(f"\n\n{'Human' if i % 2 == 0 else 'Assistant'}: {t}" for i, t in enumerate(turns))


# Row 2 is like HH harmless-base test row 1255: the chosen side has one more exchange than the rejected side.
TEST_ROWS = [
    {"chosen": hh("How do I bake bread?", "Knead, rise, bake."), "rejected": hh("How do I bake bread?", "No.")},
    {"chosen": hh("Is it safe?", "Yes.", "Why?", "Because."), "rejected": hh("Is it safe?", "No.")},
    {"prompt": "  "},
    {"prompt": "Name a colour."},
]


def test_a_test_path_row_without_a_prompt_is_skipped_and_counted(tmp_path):
    path = write_rows(tmp_path / "harmless_test.jsonl", TEST_ROWS)
    with bad_rows.collecting("skip") as log:
        prompts = load_test_prompts(path)
    assert [p.prompt for p in prompts][-1] == "Name a colour." and len(prompts) == 2
    entry = log.counts()["files"][str(path)]
    assert entry["skipped"] == 2 and entry["first_rows"] == [2, 3]
    assert any("not one assistant message" in reason for reason in entry["reasons"])


def test_refuse_stops_at_the_first_unusable_test_row(tmp_path):
    path = write_rows(tmp_path / "harmless_test.jsonl", TEST_ROWS)
    with pytest.raises(DataError, match=rf"^{path}:2: no test prompt in this row .*data.on_bad_row=refuse"), \
            bad_rows.collecting("refuse"):
        load_test_prompts(path)


def test_a_test_file_with_no_usable_row_is_refused(tmp_path):
    path = write_rows(tmp_path / "t.jsonl", [{"prompt": ""}, {"prompt": None}])
    with pytest.raises(DataError, match="none of its 2 rows holds a usable prompt"):
        load_test_prompts(path)


# (format, objectives, a good row, the same row with an empty 'rejected' side)
EMPTY_REJECTED = [
    ("trl", ["helpful"], {"prompt": "q", "chosen": "x", "rejected": "y"}, {"prompt": "q2", "chosen": "x", "rejected": ""}),
    ("trl-null", ["helpful"], {"prompt": "q", "chosen": "x", "rejected": "y"},
     {"prompt": "q2", "chosen": "x", "rejected": None}),
    ("hh", ["helpful"], {"chosen": hh("q", "x"), "rejected": hh("q", "y")},
     {"chosen": hh("q2", "x"), "rejected": hh("q2", "")}),
    ("pairwise", ["c"], {"prompt": "q", "response_a": "x", "response_b": "y", "c": "a"},
     {"prompt": "q2", "response_a": "x", "response_b": " ", "c": "a"}),
    ("helpsteer2", ["helpful"], {"prompt": "q", "response_1": "x", "response_2": "y", "preference_strength": 1},
     {"prompt": "q2", "response_1": "x", "response_2": "", "preference_strength": 1}),
    ("pku", ["better"], {"prompt": "q", "response_0": "x", "response_1": "y", "better_response_id": 0},
     {"prompt": "q2", "response_0": "x", "response_1": "", "better_response_id": 0}),
    ("scored", ["c"], {"prompt": "q", "response": "x", "c": 1}, {"prompt": "q", "response": "", "c": 2}),
]


def cfg_for(path: Path, objectives: list[str], policy: str):
    return load_config(None, ["run_dir=unused", "data.source=jsonl", f"data.path={path}", "model.name_or_path=random",
                              f"objectives=[{','.join(objectives)}]", f"data.on_bad_row={policy}",
                              "allow_single_objective=true"])


@pytest.mark.parametrize(("objectives", "good", "empty"), [c[1:] for c in EMPTY_REJECTED],
                         ids=[c[0] for c in EMPTY_REJECTED])
def test_an_empty_rejected_side_is_the_same_unusable_row_in_every_format(tmp_path, objectives, good, empty):
    # The scored format needs two responses of a prompt for one pair.
    rows = [good, *([dict(good, response="z", c=0)] if "response" in good else []), empty]
    path = write_rows(tmp_path / "rows.jsonl", rows)
    with bad_rows.collecting("skip") as log:
        pairs = load_pairs(cfg_for(path, objectives, "skip"))
    assert len(pairs) == 1
    assert log.counts()["files"][str(path)]["first_rows"] == [len(rows)]
    with pytest.raises(DataError, match=rf"^{path}:{len(rows)}: .*data.on_bad_row=refuse"):
        load_pairs(cfg_for(path, objectives, "refuse"))


def test_prepare_counts_skipped_rows_of_data_and_test_files(tmp_path):
    from sipo.stages.prepare import compute

    test_file = write_rows(tmp_path / "test.jsonl", TEST_ROWS)
    cfg = load_config(SMOKE, [f"run_dir={tmp_path / 'run'}", f"data.path={HELPSTEER}",
                              f"data.test_path={test_file}"])
    _, splits, _ = compute(cfg)
    bad = splits.counts["bad_rows"]
    assert bad["policy"] == "skip" and bad["skipped"] == 2
    assert bad["files"][str(test_file)]["first_rows"] == [2, 3]
    assert splits.counts["test_path_prompts"] == 2


def test_max_test_prompts_caps_the_test_file_with_a_seeded_choice_in_file_order():
    prompts = [PromptRecord(prompt_id=prompt_id_for(f"p{i}"), prompt=f"p{i}") for i in range(50)]
    pairs = [make_pair("train prompt", "x", "y", {"h": "a"}), make_pair("p3", "x", "y", {"h": "a"})]

    def split(seed, cap):
        return make_splits(pairs, ["h"], conflict_fraction=0.6, test_fraction=0.2, validation_fraction=0.0,
                           seed=seed, test_prompts=prompts, max_test_prompts=cap)

    capped = split(0, 10)
    ids = [int(p.prompt[1:]) for p in capped.test_prompts]
    assert len(ids) == 10 and ids == sorted(ids)  # the file's order
    assert ids == [int(p.prompt[1:]) for p in split(0, 10).test_prompts]  # seeded
    assert ids != [int(p.prompt[1:]) for p in split(1, 10).test_prompts]
    assert ids != list(range(10))  # not the first ten
    assert capped.counts["test_path_prompts"] == 50 and capped.counts["test_prompts"] == 10
    assert capped.counts["pairs_of_test_path_prompts_dropped"] == 1  # p3's pair, chosen or not
    assert len(split(0, None).test_prompts) == 50


def test_the_report_data_section_counts_skipped_rows_and_long_prompts():
    log = bad_rows.BadRowLog()
    for line in (1255, 1300):
        log.skip(bad_rows.BadRow("no test prompt in this row", path="test.jsonl", line=line))
    lines = "\n".join(data_markdown({"bad_rows": log.counts(), "test_path_prompts": 2305, "test_prompts_kept": 40,
                                     "dropped_long_prompts": 4, "evaluated_prompts": 36}))
    assert "## Data" in lines
    assert "`test.jsonl`: 2 row(s) skipped (2 × no test prompt in this row); rows 1255, 1300" in lines
    assert "40 of its 2305 distinct prompts kept" in lines
    assert "4 test prompt(s) (10%) dropped as longer than model.max_prompt_tokens; 36 evaluated" in lines
    assert data_markdown({}) == []


def test_data_counts_read_the_prepare_and_evaluate_manifests(tmp_path):
    from sipo.artifacts import RunDir
    from sipo.stages.report import data_counts

    run_dir = RunDir(tmp_path / "run")
    assert data_counts(run_dir) == {}
    log = bad_rows.BadRowLog()
    log.skip(bad_rows.BadRow("column 'rejected' is empty", path="a.jsonl", line=7))
    run_dir.write_manifest("prepare", {"counts": {"bad_rows": log.counts(), "test_path_prompts": 9,
                                                  "test_prompts": 4}})
    run_dir.write_manifest("evaluate", {"counts": {"prompts": 3, "dropped_long_prompts": 1}})
    data = data_counts(run_dir)
    assert data["bad_rows"]["files"]["a.jsonl"]["first_rows"] == [7]
    assert (data["test_path_prompts"], data["test_prompts_kept"]) == (9, 4)
    assert (data["dropped_long_prompts"], data["evaluated_prompts"]) == (1, 3)
