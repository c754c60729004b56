"""Property tests of the parsers of untrusted text: the review/rewrite output parsers (:mod:`sipo.prompting`) and the
data file loaders (:mod:`sipo.data`).

What a small model writes back is arbitrary text. The parsers must map anything to a ``str`` without raising, be
idempotent (a parsed text parses to itself), never leave a template turn label at a line start, and cut the text at
the first stop marker: ``clean + "\\n<Marker>: " + anything`` parses like ``clean``.
"""

from __future__ import annotations

import re

from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from sipo.prompting import parse_review, parse_rewrite

PARSERS = (parse_review, parse_rewrite)

# Turn labels of the templates and of the plain conversation format (any case for the line-start ones).
LINE_MARKERS = ["Question", "Response", "Review", "Rewrite", "Improved response", "User", "Assistant",
                "Beginning of conversation"]
LABELS = ["Review", "Rewrite", "Improved response", "Response", "Rewritten response"]
AT_LINE_START = re.compile(
    r"^\s*(question|response|review|rewrite|improved response|user|assistant|beginning of conversation)\s*:",
    re.IGNORECASE | re.MULTILINE,
)

# Text that mixes markers, labels, every kind of line break and whitespace, NULs and arbitrary characters.
pieces = st.one_of(
    st.text(max_size=12),
    st.sampled_from([m + ":" for m in LINE_MARKERS + LABELS] + [m.upper() + " :" for m in LINE_MARKERS]
                    + ["USER:", "ASSISTANT:", "BEGINNING OF CONVERSATION:"]),
    st.sampled_from(["\n", "\r\n", "\r", "\x0b", "\x0c", "\x1c", "\x1e", "\x85", "\u2028", "\u2029", "\n\n\n",
                     " ", "\t", "\xa0", "\x00", ":"]),
)
model_output = st.lists(pieces, max_size=12).map("".join)
# Text without a colon (or NUL) cannot hold a marker or a label: only its whitespace changes.
plain_words = st.text(st.characters(blacklist_characters=":\x00", blacklist_categories=["Cs"]), max_size=40)


@settings(max_examples=250, deadline=None)
@given(text=model_output | st.text(max_size=60))
@example(text="Review: Rewritten response: foo")
@example(text="foo\x1cuser: bar")
@example(text="Response:\nReview: hi")
def test_any_text_parses_to_a_fixed_point(text):
    for parse in PARSERS:
        once = parse(text)
        assert isinstance(once, str)
        assert once == once.strip()
        assert "\x00" not in once
        assert parse(once) == once, f"{parse.__name__} is not idempotent on {text!r}"
        assert AT_LINE_START.search(once) is None
        assert not re.search(r"\b(USER|ASSISTANT|BEGINNING OF CONVERSATION)\s*:", once)


@given(value=st.none() | st.integers() | st.floats() | st.binary() | st.lists(st.text(max_size=3)))
def test_non_text_is_nothing_usable(value):
    for parse in PARSERS:
        assert parse(value) == ""


@settings(max_examples=120, deadline=None)
@given(head=model_output, marker=st.sampled_from(LINE_MARKERS), tail=st.text(max_size=30),
       upper=st.booleans(), gap=st.sampled_from(["", " ", "  \t"]))
def test_stop_marker_on_a_new_line_cuts_the_rest(head, marker, tail, upper, gap):
    """Whatever follows a turn label at a line start is dropped: the result is that of the part before it (when
    that part is empty, the label is an echoed leading label instead, tested below)."""
    marker = marker.upper() if upper else marker
    for parse in PARSERS:
        clean = parse(head)
        assume(clean)
        assert parse(f"{clean}\n{gap}{marker}: {tail}") == clean


@settings(max_examples=120, deadline=None)
@given(head=model_output, marker=st.sampled_from(["USER", "ASSISTANT", "BEGINNING OF CONVERSATION"]),
       tail=st.text(max_size=30))
def test_conversation_turn_mid_line_cuts_the_rest(head, marker, tail):
    for parse in PARSERS:
        clean = parse(head)
        assume(clean)
        assert parse(f"{clean} {marker}: {tail}") == clean


@settings(max_examples=120, deadline=None)
@given(label=st.sampled_from(LABELS), body=plain_words, upper=st.booleans())
def test_echoed_label_is_dropped(label, body, upper):
    """``Review: <text>`` parses like ``<text>`` (the label a template ends with, echoed by the model)."""
    label = label.upper() if upper else label
    for parse in PARSERS:
        assert parse(f"{label}: {body}") == parse(body)


@settings(max_examples=120, deadline=None)
@given(body=plain_words)
def test_text_without_markers_only_loses_whitespace(body):
    """A review is the words joined by single spaces; a rewrite keeps its lines (spaces inside them collapsed)."""
    assert parse_review(body) == " ".join(body.split())
    rewrite = parse_rewrite(body)
    assert " ".join(rewrite.split()) == " ".join(body.split())
    assert "\n\n\n" not in rewrite
    assert len(rewrite.splitlines()) <= len(body.splitlines())


# --- data loaders: the file parsers --------------------------------------------------------------------------
# tests/unit/test_data.py checks that the jsonl loader round-trips valid rows and turns a garbage *text* line into
# a DataError naming the line. Here: the helpsteer and pku_saferlhf loaders, and garbage *bytes* (invalid UTF-8,
# a BOM, control characters, JSON that Python's parser rejects with other exceptions) for all three.

HS_ROW = {"prompt": "p", "response": "r", "helpfulness": 2, "correctness": 2, "coherence": 2, "complexity": 2,
          "verbosity": 2}
PKU_ROW = {"prompt": "p", "response_0": "x", "response_1": "y", "better_response_id": 0, "safer_response_id": 1}
PAIR_ROW = {"prompt": "p", "response_a": "x", "response_b": "y", "preferred": {"correctness": "a", "verbosity": "b"}}
SOURCES = {"helpsteer": (HS_ROW, ["correctness", "verbosity"]), "pku_saferlhf": (PKU_ROW, ["better", "safer"]),
           "jsonl": (PAIR_ROW, ["correctness", "verbosity"])}

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
odd_bytes = st.one_of(
    st.binary(max_size=40).filter(lambda b: b"\n" not in b and b"\r" not in b),
    st.sampled_from([b"\xef\xbb\xbf{}", b"\xff\xfe{", b"{\"prompt\": \"caf\xe9\"}", b"1" * 5000, b"[" * 5000,
                     b"{\"prompt\": " + b"[" * 3000 + b"]" * 3000 + b"}", b"NaN", b"\x00", b"{\"a\": 1e999}"]),
)


@st.composite
def changed_row(draw, source: str) -> bytes:
    """A valid row of ``source`` with one column replaced by any JSON value, or dropped."""
    import json

    base, _ = SOURCES[source]
    row = dict(base)
    column = draw(st.sampled_from(sorted(row)))
    if draw(st.booleans()):
        del row[column]
    else:
        row[column] = draw(json_scalars | st.lists(json_scalars, max_size=2) | st.dictionaries(
            st.text(max_size=3), json_scalars, max_size=2))
    return json.dumps(row).encode()


@settings(max_examples=150, deadline=None)
@given(data=st.data(), source=st.sampled_from(sorted(SOURCES)), position=st.integers(1, 3))
def test_loaders_raise_only_data_errors_naming_the_line(data, source, position):
    """Two valid rows and one bad line (anywhere): the loader returns pairs or raises DataError naming the file
    (and the line, except for undecodable bytes: the file is not UTF-8 text); nothing else escapes."""
    import json
    import tempfile
    from pathlib import Path

    from sipo.config import DataConfig, PipelineConfig
    from sipo.data import load_pairs
    from sipo.errors import DataError

    base, objectives = SOURCES[source]
    bad = data.draw(odd_bytes | changed_row(source))
    second = dict(base, response="r2", response_1="z", response_b="z")
    lines = [json.dumps(base).encode(), json.dumps(second).encode()]
    lines.insert(position - 1, bad)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rows.jsonl"
        path.write_bytes(b"\n".join(lines) + b"\n")
        cfg = PipelineConfig(run_dir="unused", objectives=objectives, data=DataConfig(source=source, path=str(path)))
        try:
            load_pairs(cfg)
        except DataError as exc:
            message = str(exc)
            assert "\n" not in message, message
            if "no preference pairs" in message:  # every row valid, but no two distinct responses to compare
                return
            assert message.startswith(f"{path}:"), message
            if "not UTF-8" not in message:
                assert message.startswith(f"{path}:{position}: "), message
