"""Long work says how far it is and how long it has left: log lines, at most one per 10 s."""

from __future__ import annotations

import logging

from sipo.logging_utils import TimeLeft, format_seconds, time_left_text, with_time_left


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_time_left_text_extrapolates_the_rate_of_the_timed_items():
    assert time_left_text(10, 40, 30.0) == "10/40 (25%), 30 s so far, about 1 min 30 s left"
    # 8 of the 10 shards were kept from an interrupted run: the 30 s went into 2 of them.
    assert time_left_text(10, 40, 30.0, timed=2) == "10/40 (25%), 30 s so far, about 7 min 30 s left"
    assert time_left_text(40, 40, 95.0) == "40/40 (100%), 1 min 35 s so far"
    assert format_seconds(4000) == "1 h 06 min"


def test_a_short_loop_logs_nothing_and_a_long_one_logs_every_ten_seconds(caplog):
    clock = Clock()
    progress = TimeLeft("label: scoring", total=6, clock=clock)
    lines = []
    with caplog.at_level(logging.INFO, logger="sipo.logging_utils"):
        for seconds in (4, 4, 4, 4, 4, 4):  # 24 s in all
            clock.now += seconds
            lines.append(progress.step())
    assert lines[:2] == [None, None]  # the first 8 s: silent
    assert lines[2] == "label: scoring: 3/6 (50%), 12 s so far, about 12 s left"
    assert lines[3:5] == [None, None]  # 10 s since the last line have not passed
    assert lines[5] == "label: scoring: 6/6 (100%), 24 s so far"  # the end of a loop that logged
    assert caplog.text.count("label: scoring") == 2
    quick = TimeLeft("quick", total=2, clock=clock)
    assert quick.step() is None and quick.step() is None


def test_with_time_left_yields_every_item():
    assert list(with_time_left(iter(range(5)), 5, "x")) == [0, 1, 2, 3, 4]


def test_evaluate_shards_log_the_time_left(tmp_path, caplog):
    from sipo.records import PromptRecord
    from sipo.stages.sharding import run_sharded

    items = [PromptRecord(prompt_id=str(i), prompt=str(i)) for i in range(4)]
    with caplog.at_level(logging.INFO):
        rows = run_sharded(tmp_path, items, lambda shard: list(shard), record=PromptRecord,
                           key=lambda r: r.prompt_id, shard_size=2, desc="evaluate")
    assert len(rows) == 4
    assert "evaluate: shard 1/2 (50%), 0 s so far, about 0 s left (done)" in caplog.text
    assert "evaluate: shard 2/2 (100%)" in caplog.text
