"""Train / train_conflict / validation / test splits of preference pairs: pure, seeded, split by prompt.

:func:`make_splits` rules:

- **By prompt.** All pairs of a prompt go to one split. Prompts are ordered by ``sha256(seed, prompt_id)``; the
  first ``test_fraction`` of them are test prompts, the next ``validation_fraction`` validation prompts, the rest
  train prompts (sizes rounded half up; a non-zero fraction gets at least one prompt while at least one prompt
  is left for training). The result depends only on the set of pairs and the seed, never on input order. With
  ``validation_prompt_ids`` (a source's own validation prompts) exactly those prompts are validation prompts and
  ``validation_fraction`` is not used.
- **Training mixture of objective o** (``train[o]``, the DPO data of o): the train prompts' pairs with no tie
  under o, conflicting and non-conflicting mixed so that the conflicting share is ``conflict_fraction`` as
  closely as availability allows: all of the scarcer kind is kept and the other kind is subsampled (seeded) to
  match; see :func:`mixture_sizes`. ``max_train_pairs`` then caps the total, keeping the share.
- **train_conflict**: for each train prompt, one conflicting pair with no tie under any objective (a seeded
  choice): the prompts SIPO samples, reviews, rewrites and filters. ``max_conflict_prompts`` caps their number
  (a seeded choice of prompts); ``conflict_max_ties`` lets a conflicting pair have that many tied objectives
  (with three or more objectives). With one dataset per objective (pairs with ``unlabelled`` objectives) there
  is no conflict yet: the ``label`` stage fills the labels and selects them with :func:`select_conflict_pairs`.
- **test_prompts** may be given (``data.test_path``): then no prompt of the data is held out for testing, and the
  pairs of those prompts are dropped (counted). ``max_test_prompts`` caps them too (a seeded choice, kept in the
  file's order); the pairs of every given test prompt are dropped, chosen or not.
- **validation**: every pair of the validation prompts. **test_prompts**: the test prompts (only the text is
  needed), capped by ``max_test_prompts`` (a seeded choice).

Every list is sorted by ``pair_id`` (pairs) or ``prompt_id`` (train_conflict, test prompts).
:func:`write_splits` / :func:`load_splits` store them as JSONL in one folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sipo.artifacts import atomic_write_json
from sipo.errors import DataError
from sipo.records import Pair, PromptRecord, read_jsonl, write_jsonl

logger = logging.getLogger(__name__)

TRAIN_CONFLICT_FILE = "train_conflict.jsonl"
VALIDATION_FILE = "validation.jsonl"
TEST_PROMPTS_FILE = "test_prompts.jsonl"
COUNTS_FILE = "counts.json"


def train_file(objective: str) -> str:
    """File name of an objective's training mixture (objective names are checked to be safe by the config)."""
    return f"train_{objective}.jsonl"


@dataclass
class Splits:
    objectives: list[str]
    train: dict[str, list[Pair]]
    """Objective -> its DPO training mixture (no ties under that objective)."""
    train_conflict: list[Pair]
    """One conflicting, tie-free pair per selected train prompt."""
    validation: list[Pair]
    test_prompts: list[PromptRecord]
    counts: dict[str, Any] = field(default_factory=dict)
    """Sizes and shares (JSON-able), for the stage manifest."""


def _rank(seed: int, salt: str, item_id: str) -> str:
    """A seeded pseudo-random sort key that depends only on the item's id."""
    return hashlib.sha256(f"{seed}\x1f{salt}\x1f{item_id}".encode()).hexdigest()


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def split_sizes(num_prompts: int, test_fraction: float, validation_fraction: float) -> tuple[int, int]:
    """(test, validation) prompt counts: fractions rounded half up, at least one for a non-zero fraction as long as
    one prompt is left for training.

    >>> split_sizes(10, 0.2, 0.1)
    (2, 1)
    >>> split_sizes(3, 0.2, 0.1)
    (1, 1)
    """
    num_test = _round_half_up(test_fraction * num_prompts)
    if test_fraction > 0 and num_test == 0 and num_prompts >= 2:
        num_test = 1
    num_test = min(num_test, max(num_prompts - 1, 0))
    num_validation = _round_half_up(validation_fraction * num_prompts)
    if validation_fraction > 0 and num_validation == 0 and num_prompts - num_test >= 2:
        num_validation = 1
    num_validation = min(num_validation, max(num_prompts - num_test - 1, 0))
    return num_test, num_validation


def mixture_sizes(
    num_conflicting: int, num_other: int, conflict_fraction: float, max_pairs: int | None = None
) -> tuple[int, int]:
    """How many conflicting and non-conflicting pairs make an objective's training mixture.

    Keep all of the scarcer kind and as many of the other as the fraction asks (rounded half up). When one kind
    is missing altogether (and the fraction is strictly between 0 and 1) no mixture has the asked share, so all of
    the other kind is used. ``max_pairs`` caps the total, splitting the cap by the fraction.

    >>> mixture_sizes(30, 100, 0.6)    # conflicts are scarce: all 30, plus 30 * 0.4 / 0.6 = 20 others
    (30, 20)
    >>> mixture_sizes(90, 40, 0.6)     # others are scarce: all 40, plus 40 * 0.6 / 0.4 = 60 conflicts
    (60, 40)
    >>> mixture_sizes(90, 40, 0.6, max_pairs=50)
    (30, 20)
    """
    f = conflict_fraction
    if f >= 1.0:
        conflicting, other = num_conflicting, 0
    elif f <= 0.0:
        conflicting, other = 0, num_other
    elif num_conflicting == 0 or num_other == 0:
        conflicting, other = num_conflicting, num_other
    else:
        conflicting = num_conflicting
        other = _round_half_up(conflicting * (1 - f) / f)
        if other > num_other:
            other = num_other
            conflicting = min(num_conflicting, _round_half_up(other * f / (1 - f)))
    if max_pairs is not None and conflicting + other > max_pairs:
        capped_conflicting = min(conflicting, _round_half_up(max_pairs * f))
        other = min(other, max_pairs - capped_conflicting)
        conflicting = min(conflicting, max_pairs - other)
    return conflicting, other


def _conflicts(pair: Pair, objectives: Sequence[str]) -> bool:
    return len({pair.preferred[o] for o in objectives} - {None}) > 1


def _seeded_take(pairs: Sequence[Pair], k: int, seed: int, salt: str) -> list[Pair]:
    return sorted(pairs, key=lambda p: _rank(seed, salt, p.pair_id))[:k]


def pair_counts(pairs: Iterable[Pair], objectives: Sequence[str]) -> dict[str, Any]:
    """Prompts, pairs, conflicting pairs and ties per objective of a set of pairs."""
    pairs = list(pairs)
    return {
        "prompts": len({p.prompt_id for p in pairs}),
        "pairs": len(pairs),
        "conflicting_pairs": sum(_conflicts(p, objectives) for p in pairs),
        "ties": {o: sum(p.preferred[o] is None and o not in p.unlabelled for p in pairs) for o in objectives},
        **({"unlabelled": {o: sum(o in p.unlabelled for p in pairs) for o in objectives}}
           if any(p.unlabelled for p in pairs) else {}),
    }


def num_ties(pair: Pair, objectives: Sequence[str]) -> int:
    return sum(pair.preferred[o] is None for o in objectives)


def select_conflict_pairs(
    pairs: Iterable[Pair], objectives: Sequence[str], *, seed: int, max_conflict_prompts: int | None = None,
    conflict_max_ties: int = 0, warn: bool = True,
) -> tuple[list[Pair], dict[str, Any]]:
    """The train_conflict pairs: per prompt, one conflicting pair with at most ``conflict_max_ties`` tied objectives
    (a seeded choice); at most ``max_conflict_prompts`` prompts (a seeded choice), sorted by prompt_id.

    Also returns the counts for the manifest: ``train_conflict_prompts`` (chosen),
    ``train_conflict_prompts_available`` (prompts with an eligible pair) and ``conflict_ties``: the conflicting
    pairs kept and lost by the ties setting, and the prompts that lost every conflicting pair to it.
    """
    objectives = list(objectives)
    by_prompt: dict[str, list[Pair]] = {}
    for pair in pairs:
        by_prompt.setdefault(pair.prompt_id, []).append(pair)
    conflict_choice: dict[str, Pair] = {}
    kept = lost = prompts_lost = 0
    for pid in sorted(by_prompt):
        conflicting = [p for p in by_prompt[pid] if _conflicts(p, objectives)]
        candidates = [p for p in conflicting if num_ties(p, objectives) <= conflict_max_ties]
        kept += len(candidates)
        lost += len(conflicting) - len(candidates)
        if candidates:
            conflict_choice[pid] = min(candidates, key=lambda p: _rank(seed, "train-conflict", p.pair_id))
        elif conflicting:
            prompts_lost += 1
    chosen_prompts = sorted(conflict_choice, key=lambda pid: _rank(seed, "train-conflict-prompts", pid))
    train_conflict = sorted(
        (conflict_choice[pid] for pid in chosen_prompts[:max_conflict_prompts]), key=lambda p: p.prompt_id
    )
    if not train_conflict and warn:
        logger.warning("no train prompt has a conflicting pair with at most %d tie(s) (data.conflict_max_ties): "
                       "nothing for SIPO to self-improve on", conflict_max_ties)
    counts = {
        "train_conflict_prompts": len(train_conflict),
        "train_conflict_prompts_available": len(conflict_choice),
        "conflict_ties": {"max_ties": conflict_max_ties, "pairs_kept": kept, "pairs_lost": lost,
                          "prompts_lost": prompts_lost},
    }
    return train_conflict, counts


def cap_test_prompts(prompts: Sequence[PromptRecord], limit: int | None, seed: int) -> list[PromptRecord]:
    """At most ``limit`` of ``prompts``: those whose seeded hash of the id is lowest, in their given order. Pure.

    >>> [p.prompt for p in cap_test_prompts([PromptRecord(str(i), str(i)) for i in range(5)], 2, 0)]
    ['3', '4']
    """
    prompts = list(prompts)
    if limit is None or len(prompts) <= limit:
        return prompts
    chosen = set(sorted((p.prompt_id for p in prompts), key=lambda pid: _rank(seed, "test-path", pid))[:limit])
    return [p for p in prompts if p.prompt_id in chosen]


def make_splits(
    pairs: Iterable[Pair],
    objectives: Sequence[str],
    *,
    conflict_fraction: float,
    test_fraction: float,
    validation_fraction: float,
    seed: int,
    max_train_pairs: int | None = None,
    max_conflict_prompts: int | None = None,
    max_test_prompts: int | None = None,
    conflict_max_ties: int = 0,
    test_prompts: Sequence[PromptRecord] | None = None,
    validation_prompt_ids: Collection[str] | None = None,
) -> Splits:
    """Split pairs by prompt and build each objective's training mixture (rules in the module docstring).

    Raises:
        DataError: there are no pairs, or an objective's training mixture would be empty.
        ValueError: arguments out of range, duplicate pair ids, or a pair without a label for an objective.
    """
    objectives = list(objectives)
    if not 0.0 <= conflict_fraction <= 1.0:
        raise ValueError(f"conflict_fraction must be in [0, 1], got {conflict_fraction}")
    if not (0.0 <= test_fraction < 1.0 and 0.0 <= validation_fraction < 1.0
            and test_fraction + validation_fraction < 1.0):
        raise ValueError("test_fraction and validation_fraction must be in [0, 1) and sum to less than 1")
    for name, cap in (("max_train_pairs", max_train_pairs), ("max_conflict_prompts", max_conflict_prompts),
                      ("max_test_prompts", max_test_prompts)):
        if cap is not None and cap < 0:
            raise ValueError(f"{name} must be >= 0, got {cap}")
    by_prompt: dict[str, list[Pair]] = {}
    seen: set[str] = set()
    all_pairs = []
    for pair in pairs:
        if pair.pair_id in seen:
            raise ValueError(f"duplicate pair_id {pair.pair_id}")
        missing = [o for o in objectives if o not in pair.preferred]
        if missing:
            raise ValueError(f"pair {pair.pair_id} has no label for objective '{missing[0]}'")
        seen.add(pair.pair_id)
        all_pairs.append(pair)
        by_prompt.setdefault(pair.prompt_id, []).append(pair)
    if not all_pairs:
        raise DataError("no preference pairs to split")

    held_out = 0
    given = None
    if test_prompts is not None:
        # The user's own test prompts: none of the data is held out, and no pair of a test prompt is trained on.
        test_fraction = 0.0
        for record in test_prompts:
            held_out += len(by_prompt.pop(record.prompt_id, []))
        all_pairs = [p for pid in by_prompt for p in by_prompt[pid]]
        if not all_pairs:
            raise DataError("every preference pair's prompt is one of data.test_path's prompts: nothing to train on")
    order = sorted(by_prompt, key=lambda pid: _rank(seed, "split", pid))
    if validation_prompt_ids:
        # The source's own validation prompts: exactly those, whatever validation_fraction says.
        chosen = set(validation_prompt_ids)
        validation_ids = [pid for pid in order if pid in chosen]
        rest = [pid for pid in order if pid not in chosen]
        num_test = split_sizes(len(rest), test_fraction, 0.0)[0]
        test_ids, train_ids = rest[:num_test], rest[num_test:]
    else:
        num_test, num_validation = split_sizes(len(order), test_fraction, validation_fraction)
        test_ids = order[:num_test]
        validation_ids = order[num_test:num_test + num_validation]
        train_ids = order[num_test + num_validation:]

    if test_prompts is None:
        test_prompts = sorted(
            (PromptRecord(prompt_id=pid, prompt=by_prompt[pid][0].prompt) for pid in test_ids[:max_test_prompts]),
            key=lambda r: r.prompt_id,
        )
    else:  # the file's prompts, in the file's order; above max_test_prompts, a seeded choice of them
        given = len(test_prompts)
        test_prompts = cap_test_prompts(test_prompts, max_test_prompts, seed)
    validation = sorted((p for pid in validation_ids for p in by_prompt[pid]), key=lambda p: p.pair_id)
    train_pairs = [p for pid in train_ids for p in by_prompt[pid]]

    train: dict[str, list[Pair]] = {}
    available: dict[str, dict[str, int]] = {}
    achieved: dict[str, float] = {}
    for objective in objectives:
        labelled = [p for p in train_pairs if p.preferred[objective] is not None]
        conflicting = [p for p in labelled if _conflicts(p, objectives)]
        other = [p for p in labelled if not _conflicts(p, objectives)]
        num_conflicting, num_other = mixture_sizes(len(conflicting), len(other), conflict_fraction, max_train_pairs)
        mixture = (_seeded_take(conflicting, num_conflicting, seed, f"train-conflicting:{objective}")
                   + _seeded_take(other, num_other, seed, f"train-other:{objective}"))
        if not mixture:
            raise DataError(
                f"objective '{objective}' has no training pairs: {len(train_ids)} train prompts give "
                f"{len(conflicting)} conflicting and {len(other)} non-conflicting pairs without a tie under it "
                f"(data.conflict_fraction={conflict_fraction:g})"
            )
        train[objective] = sorted(mixture, key=lambda p: p.pair_id)
        available[objective] = {"conflicting": len(conflicting), "non_conflicting": len(other)}
        achieved[objective] = num_conflicting / len(mixture)

    train_conflict, conflict_counts = select_conflict_pairs(
        train_pairs, objectives, seed=seed, max_conflict_prompts=max_conflict_prompts,
        conflict_max_ties=conflict_max_ties, warn=not any(p.unlabelled for p in train_pairs))

    counts = pair_counts(all_pairs, objectives)
    counts.update({
        "split_prompts": {"train": len(train_ids), "validation": len(validation_ids), "test": len(test_ids)},
        "train_pairs": {o: len(train[o]) for o in objectives},
        "train_available": available,
        "conflict_fraction_target": conflict_fraction,
        "conflict_fraction_achieved": achieved,
        **conflict_counts,
        "validation_pairs": len(validation),
        "test_prompts": len(test_prompts),
    })
    if held_out:
        counts["pairs_of_test_path_prompts_dropped"] = held_out
    if given is not None:
        counts["test_path_prompts"] = given
    logger.info(
        "splits: %d prompts (%d train, %d validation, %d test); %d/%d pairs conflict; training pairs %s; "
        "conflict share %s; %d train_conflict prompts",
        counts["prompts"], len(train_ids), len(validation_ids), len(test_ids), counts["conflicting_pairs"],
        counts["pairs"], counts["train_pairs"], {o: round(a, 3) for o, a in achieved.items()},
        len(train_conflict),
    )
    return Splits(objectives, train, train_conflict, validation, test_prompts, counts)


def write_splits(splits: Splits, out_dir: str | Path) -> dict[str, Path]:
    """Write every split as JSONL (atomically) plus ``counts.json``; returns name -> path of the files written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for objective in splits.objectives:
        written[f"train_{objective}"] = out / train_file(objective)
        write_jsonl(written[f"train_{objective}"], splits.train[objective])
    for name, file, records in (("train_conflict", TRAIN_CONFLICT_FILE, splits.train_conflict),
                                ("validation", VALIDATION_FILE, splits.validation),
                                ("test_prompts", TEST_PROMPTS_FILE, splits.test_prompts)):
        written[name] = out / file
        write_jsonl(written[name], records)
    written["counts"] = out / COUNTS_FILE
    atomic_write_json(written["counts"], splits.counts)
    return written


def read_train(out_dir: str | Path, objective: str) -> list[Pair]:
    return read_jsonl(Path(out_dir) / train_file(objective), Pair)


def read_train_conflict(out_dir: str | Path) -> list[Pair]:
    return read_jsonl(Path(out_dir) / TRAIN_CONFLICT_FILE, Pair)


def read_validation(out_dir: str | Path) -> list[Pair]:
    return read_jsonl(Path(out_dir) / VALIDATION_FILE, Pair)


def read_test_prompts(out_dir: str | Path) -> list[PromptRecord]:
    return read_jsonl(Path(out_dir) / TEST_PROMPTS_FILE, PromptRecord)


def load_splits(out_dir: str | Path, objectives: Sequence[str]) -> Splits:
    """Read back what :func:`write_splits` wrote (``counts`` is empty if ``counts.json`` is missing)."""
    out = Path(out_dir)
    counts_path = out / COUNTS_FILE
    counts: Mapping[str, Any] = json.loads(counts_path.read_text()) if counts_path.is_file() else {}
    return Splits(
        objectives=list(objectives),
        train={o: read_train(out, o) for o in objectives},
        train_conflict=read_train_conflict(out),
        validation=read_validation(out),
        test_prompts=read_test_prompts(out),
        counts=dict(counts),
    )
