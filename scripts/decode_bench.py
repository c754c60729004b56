#!/usr/bin/env python3
"""Decoding and scoring throughput at paper scale: a random Llama of Llama-2-7B's shape (``--size 7b``: hidden
4096, 32 layers, 32 heads, MLP 11008, a vocabulary of 32,000 made-up words; about 6.7 billion parameters), built
on the device in bfloat16 (nothing is downloaded or carried), with random LoRA adapters (r 8, alpha 16, q/k/v/o).
``--size tiny`` is the same script on a 2-layer model, for a CPU (what the tests run).

Phases (``--phases`` picks some; each one is re-runnable alone):

  setup      install what the machine lacks of trl, omegaconf, moocore and datasets from ``--wheels`` (as
             scripts/gpu_check.py does; scripts/fetch_gpu_wheels.sh downloads them where PyPI is reachable)
  check      on the device, a tiny random Llama in float32: batched MOD gives the naive per-adapter loop's tokens
             (scripts/device_checks.py's check_mod: 2 and 3 adapters, one adapter, a soup with an adapter)
  generate   transformers' ``generate`` with one LoRA adapter active (greedy): the anchor
  decoder    sipo's decoder (sipo.decoding.mod) with one adapter
  mod2       MOD with 2 adapters (weights 0.3 / 0.7)
  mod3       MOD with 3 adapters (weights 0.2 / 0.3 / 0.5)
  scoring    batched implicit rewards with 6 judges (2 adapters + 4 soups) and the reference (responses/s)

Each measured phase runs at every ``--batches`` size (default 1,16,64,128), then at the largest batch that fits
(``--search``): a bounded search that predicts the largest batch from the peak memory measured at the two largest
batches, runs it, and on out-of-memory shrinks it (at most ``--search-tries`` runs). Each cell is one untimed
warm-up (the first cell of a phase only, unless ``--warmup-each``) and ``--repeats`` timed runs; its tokens/s (or
responses/s) and its peak memory (``torch.cuda.max_memory_allocated`` on CUDA; on a CPU the process's peak
resident set so far, which only grows) go to the JSON.

The device work runs in a child process with a deadline (``--budget`` seconds for the whole run); the child rewrites
the JSON file after every cell (its log goes beside it, with the suffix ``.log``) and skips, and records as skipped,
what its budget cannot fit; the parent stops it at the deadline, so a run cut short keeps what it measured. Exit status 0 when everything asked for ran without error, 1
otherwise (the JSON's ``failures`` and ``incomplete`` say what), 2 for a bad argument.

On a GPU machine (through the workplace's device ``run`` tool: ``carry=["wheels"]``, ``timeout_s=540``)::

    python3 scripts/decode_bench.py --device cuda --size 7b --wheels wheels --budget 450 --out $OUT/decode_bench_7b.json

On a CPU (a plumbing check only; its figures say nothing about a GPU)::

    python scripts/decode_bench.py --device cpu --size tiny --batches 1,4 --search-max 8 --budget 120
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import gc
import importlib.util
import json
import logging
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
sys.path.insert(0, str(SRC))  # sipo.artifacts is plain Python: usable before the setup phase installs anything
sys.path.insert(0, str(REPO / "scripts"))  # device_checks.py, the checks themselves (test tooling, not in the package)

from sipo.artifacts import atomic_write_json  # noqa: E402

logger = logging.getLogger("decode_bench")

PHASES = ("setup", "check", "generate", "decoder", "mod2", "mod3", "scoring")
DECODING = ("generate", "decoder", "mod2", "mod3")
MEASURED = (*DECODING, "scoring")
BATCHES = (1, 16, 64, 128)
SEARCH_ORDER = ("mod2", "decoder", "generate", "mod3", "scoring")
"""The largest-batch search runs after every fixed batch, in this order: the target figure (MOD, 2 adapters) first."""
TARGETS = {"mod2_tokens_per_s": 2200.0, "mod_vs_one_adapter": 0.9}
"""Issue 25's targets, at size 7b on one GPU: MOD with 2 adapters at least 2,200 tokens/s, and MOD at least 0.9x
one-adapter decoding at every batch size."""
MEMORY_HEADROOM = 0.9
"""The largest-batch search aims at this share of the device's memory."""
TAIL = 3000


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _tail(text: str, size: int = TAIL) -> str:
    return text if len(text) <= size else "..." + text[-size:]


def _gpu_check() -> Any:
    """scripts/gpu_check.py as a module: its setup phase, child environment and device description."""
    spec = importlib.util.spec_from_file_location("gpu_check", Path(__file__).with_name("gpu_check.py"))
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------------------- measuring (the child)


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's out-of-memory error, or a CPU allocation that failed."""
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


class Device:
    """Synchronisation, memory reset and peak memory on CUDA or a CPU."""

    def __init__(self, name: str):
        import torch

        self.name, self.torch = name, torch
        self.cuda = name == "cuda"

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def free(self) -> None:
        gc.collect()
        if self.cuda:
            self.torch.cuda.empty_cache()

    def reset_peak(self) -> None:
        self.sync()
        if self.cuda:
            self.torch.cuda.reset_peak_memory_stats()

    def peak_mb(self) -> float:
        """CUDA: the peak allocated since :meth:`reset_peak`; CPU: the process's peak resident set so far."""
        self.sync()
        if self.cuda:
            return self.torch.cuda.max_memory_allocated() / 2**20
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # KiB on Linux

    def memory_kind(self) -> str:
        return ("torch.cuda.max_memory_allocated since the cell began" if self.cuda
                else "the process's peak resident set size so far (ru_maxrss; it never goes down)")

    def capacity_mb(self) -> float | None:
        """Memory the largest-batch search may plan for (CUDA: a share of the total; CPU: no prediction)."""
        if not self.cuda:
            return None
        return MEMORY_HEADROOM * self.torch.cuda.get_device_properties(0).total_memory / 2**20


class Bench:
    """One process's measurements: the random model, its adapters and the prompts, and each cell's timing."""

    def __init__(self, args: argparse.Namespace, data: dict[str, Any], save: Callable[[], None], deadline: float):
        self.args, self.data, self.save, self.deadline = args, data, save, deadline
        self.device = Device(args.device)
        self.warm: set[str] = set()
        self.last: dict[str, tuple[int, float]] = {}  # phase -> (batch, seconds of one timed run)
        self.bank: Any = None

    # -- set-up ----------------------------------------------------------------------------------------------

    def build(self, root: Path) -> None:
        """The random model in ``--dtype`` on the device, 3 adapters saved under ``root``, and the bank with the 4
        soups of the filter stage."""
        import device_checks as dc

        from sipo.models.adapters import AdapterBank

        start = time.perf_counter()
        model, self.tokenizer, self.words, adapters = dc.random_setup(
            self.args.size, root, device=self.args.device, seed=self.args.seed, dtype=self.args.dtype)
        self.bank = AdapterBank.load(model, adapters)  # the model is in its dtype already: no copy
        for name, weights in dc.SOUPS.items():
            self.bank.add_soup(name, weights)
        self.device.sync()
        shape = {k: v for k, v in dc.SIZES[self.args.size].items() if k != "vocabulary"}
        base = [(n, p) for n, p in self.bank.model.named_parameters() if "lora_" not in n]
        self.data["model"] = {
            "size": self.args.size, "dtype": self.args.dtype, **shape, "vocabulary": len(self.tokenizer),
            "parameters": sum(p.numel() for _, p in base),
            "weights_mb": round(sum(p.numel() * p.element_size() for _, p in base) / 2**20, 1),
            "lora": "r 8, alpha 16, q/k/v/o; 3 adapters + 4 soups",
            "build_seconds": round(time.perf_counter() - start, 1),
        }
        logger.info("built the %s model (%s parameters, %s) in %.1f s", self.args.size,
                    f"{self.data['model']['parameters']:,}", self.args.dtype, self.data["model"]["build_seconds"])

    def prompts(self, count: int) -> list[str]:
        import device_checks as dc

        low, high = self.args.prompt_words
        return dc.prompts_for(self.tokenizer, self.words, count, self.args.seed + 100, low, high)

    def responses(self, count: int) -> list[str]:
        import device_checks as dc

        low, high = self.args.response_words
        return dc.texts(self.words, count, low, high, self.args.seed + 200)

    # -- one cell --------------------------------------------------------------------------------------------

    def job(self, phase: str, batch: int) -> tuple[Callable[[], Any], Callable[[Any], int], int]:
        """(the work of one cell, what it produced -> its units (tokens or responses), prompts it holds)."""
        import device_checks as dc

        from sipo.decoding.mod import mod_generate_token_ids
        from sipo.scoring.implicit import implicit_rewards

        args = self.args
        if phase == "scoring":
            count = batch * max(1, -(-args.responses // batch))  # whole batches, at least --responses
            per_prompt = args.responses_per_prompt
            pool = self.prompts(-(-count // per_prompt))
            prompts = [pool[i // per_prompt] for i in range(count)]
            responses = self.responses(count)

            def score() -> Any:
                return implicit_rewards(self.bank, self.tokenizer, prompts, responses, dc.JUDGES, beta=dc.BETA,
                                        batch_size=batch)

            return score, lambda _: count, count
        prompts = self.prompts(batch)
        if phase == "generate":
            return (lambda: generate_one_adapter(self.bank, self.tokenizer, prompts, args.new_tokens, batch),
                    lambda ids: sum(map(len, ids)), batch)
        mix = {"decoder": {"obj0": 1.0}, "mod2": dc.MIX2, "mod3": dc.MIX3}[phase]
        return (lambda: mod_generate_token_ids(self.bank, self.tokenizer, prompts, [mix] * batch,
                                               max_new_tokens=args.new_tokens, batch_size=batch, progress=False),
                lambda ids: sum(map(len, ids)), batch)

    def predicted_seconds(self, phase: str, batch: int) -> float:
        """A rough time for a cell (to skip what cannot fit the budget): the last cell of the phase scaled by
        the batch (at least its time), times the runs it needs."""
        runs = self.args.repeats + (0 if phase in self.warm and not self.args.warmup_each else 1)
        if phase not in self.last:
            return 0.0
        last_batch, seconds = self.last[phase]
        return runs * seconds * max(1.0, batch / last_batch) ** 0.7

    def cell(self, phase: str, batch: int) -> dict[str, Any]:
        """Warm-up (when due) and ``--repeats`` timed runs of one phase at one batch size."""
        left = self.deadline - time.monotonic()
        need = self.predicted_seconds(phase, batch)
        if left < 1 or need > left:
            return {"skipped": f"time budget: {left:.0f} s left, about {need:.0f} s needed"}
        work, units, prompts = self.job(phase, batch)
        self.device.free()
        self.device.reset_peak()
        warmed = phase not in self.warm or self.args.warmup_each
        if warmed:
            work()
            self.warm.add(phase)
        times = []
        result = None
        for _ in range(max(1, self.args.repeats)):
            self.device.sync()
            start = time.perf_counter()
            result = work()
            self.device.sync()
            times.append(time.perf_counter() - start)
        seconds = sorted(times)[len(times) // 2]
        self.last[phase] = (batch, seconds)
        count = units(result)
        row: dict[str, Any] = {"batch": batch, "seconds": round(seconds, 4), "runs": [round(t, 4) for t in times],
                               "peak_memory_mb": round(self.device.peak_mb(), 1), "warm_up_at_this_batch": warmed}
        if phase == "scoring":
            row.update(responses=count, judges=6, responses_per_s=round(count / seconds, 2))
        else:
            row.update(prompts=prompts, new_tokens=self.args.new_tokens, tokens=count,
                       tokens_per_s=round(count / seconds, 2))
        if isinstance(result, list):
            row["_ids"] = result  # dropped before saving; compared across phases
        return row

    def guarded_cell(self, phase: str, batch: int) -> dict[str, Any]:
        """:meth:`cell`, an exception recorded as a failed row (out-of-memory marked); the memory is freed after
        the exception is gone (its traceback holds the failed run's tensors)."""
        failed: dict[str, Any] | None = None
        try:
            return self.cell(phase, batch)
        except Exception as exc:
            oom = is_out_of_memory(exc)
            failed = {"batch": batch, "ok": False, "out_of_memory": oom,
                      "error": f"{type(exc).__name__}: {exc}"[:800],
                      **({} if oom else {"traceback": _tail(traceback.format_exc(), 2000)})}
        self.device.free()
        return failed

    # -- the largest batch -----------------------------------------------------------------------------------

    def search(self, phase: str, rows: dict[str, Any]) -> dict[str, Any]:
        """The largest batch that fits: predicted from the peak memory at the two largest measured batches (a
        straight line through them, up to the device's capacity), then run; on out-of-memory shrunk to 70 %, at
        most ``--search-tries`` runs, never above ``--search-max`` nor at or below the largest measured batch."""
        measured = sorted((row["batch"], row["peak_memory_mb"]) for row in rows.values()
                          if isinstance(row, dict) and "peak_memory_mb" in row and "batch" in row)
        if not measured:
            return {"skipped": "no batch of this phase was measured"}
        floor = measured[-1][0]
        capacity = self.device.capacity_mb()
        prediction: dict[str, Any] = {"from": [list(m) for m in measured[-2:]]}
        if capacity is None or len(measured) < 2 or measured[-1][0] == measured[-2][0]:
            candidate = self.args.search_max
            prediction["rule"] = "no memory prediction (a CPU, or one measured batch): --search-max"
        else:
            (b0, m0), (b1, m1) = measured[-2:]
            slope = max((m1 - m0) / (b1 - b0), 1e-6)
            candidate = int(b1 + (capacity - m1) / slope)
            prediction.update(capacity_mb=round(capacity, 1), mb_per_batch_item=round(slope, 2),
                              rule="peak memory linear in the batch through the two largest measured batches")
        candidate = min(candidate, self.args.search_max)
        if candidate > 64:
            candidate -= candidate % 8
        tries: list[dict[str, Any]] = []
        best: dict[str, Any] | None = None
        while candidate > floor and len(tries) < self.args.search_tries:
            row = self.guarded_cell(phase, candidate)
            tries.append({"batch": candidate, **({"ok": True} if "seconds" in row else
                                                 {k: row[k] for k in ("ok", "out_of_memory", "error", "skipped")
                                                  if k in row})})
            if "seconds" in row:
                best = row
                break
            if "skipped" in row or not row.get("out_of_memory"):
                break
            candidate = int(candidate * 0.7)
        result: dict[str, Any] = {"prediction": prediction, "tries": tries}
        if best is not None:
            result.update(best)
        elif not tries:
            result["skipped"] = f"no candidate above the largest measured batch {floor} (--search-max " \
                                f"{self.args.search_max})"
        else:
            result["skipped"] = "no candidate fitted: " + (tries[-1].get("skipped") or tries[-1].get("error", ""))
        return result

    # -- the whole measurement -------------------------------------------------------------------------------

    def run(self) -> None:
        phases = [p for p in MEASURED if p in self.args.phases]
        results = self.data.setdefault("measurements", {})
        ids: dict[str, dict[str, list[list[int]]]] = {}
        for batch in self.args.batches:
            for phase in phases:
                row = self.guarded_cell(phase, batch)
                found = row.pop("_ids", None)
                if found is not None:
                    ids.setdefault(phase, {})[str(batch)] = found
                results.setdefault(phase, {})[str(batch)] = row
                logger.info("%s at batch %d: %s", phase, batch, _summary(row))
                self.save()
        if self.args.search:
            for phase in [p for p in SEARCH_ORDER if p in phases]:
                row = self.search(phase, results.get(phase, {}))
                row.pop("_ids", None)
                results[phase]["largest"] = row
                logger.info("%s at the largest batch: %s", phase, _summary(row))
                self.save()
        self.data["agreement"] = agreement(ids)
        self.data["ratios"] = ratios(results)
        self.data["targets"] = targets(results, self.args.size, self.args.device)
        self.save()


def generate_one_adapter(bank: Any, tokenizer: Any, prompts: list[str], new_tokens: int,
                         batch: int) -> list[list[int]]:
    """transformers' greedy ``generate`` with adapter obj0 active (benchmarks/speed.py's anchor)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import speed

    settings = dataclasses.replace(speed.Settings(), new_tokens=new_tokens, mod_batch_size=batch)
    return speed._generate_one_adapter(bank, tokenizer, prompts, settings)


def _summary(row: dict[str, Any]) -> str:
    if "tokens_per_s" in row:
        return f"{row['tokens_per_s']} tokens/s, peak {row['peak_memory_mb']} MB (batch {row['batch']})"
    if "responses_per_s" in row:
        return f"{row['responses_per_s']} responses/s, peak {row['peak_memory_mb']} MB (batch {row['batch']})"
    return row.get("skipped") or row.get("error", "?")


def agreement(ids: dict[str, dict[str, list[list[int]]]]) -> dict[str, Any]:
    """Per batch: prompts whose tokens are equal between sipo's one-adapter decoder and ``generate`` (both greedy
    with obj0; equal in float32, near-ties may flip in bfloat16), and prompts where MOD's mix changes the output."""
    out: dict[str, Any] = {}
    for batch, decoded in ids.get("decoder", {}).items():
        entry: dict[str, Any] = {"prompts": len(decoded)}
        if batch in ids.get("generate", {}):
            entry["decoder_equals_generate"] = sum(a == b for a, b in zip(decoded, ids["generate"][batch]))
        if batch in ids.get("mod2", {}):
            entry["mod2_differs_from_decoder"] = sum(a != b for a, b in zip(decoded, ids["mod2"][batch]))
        out[batch] = entry
    return out


def ratios(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per batch: MOD's tokens/s over one-adapter decoding's (the faster of sipo's decoder and ``generate``), and
    sipo's decoder over ``generate``."""
    def speed(phase: str, batch: str) -> float | None:
        row = results.get(phase, {}).get(batch, {})
        return row.get("tokens_per_s") if isinstance(row, dict) else None

    out: dict[str, dict[str, float]] = {}
    batches = {b for phase in DECODING for b in results.get(phase, {}) if b != "largest"}
    for batch in sorted(batches, key=int):
        single = [s for s in (speed("decoder", batch), speed("generate", batch)) if s]
        for name in ("mod2", "mod3"):
            if speed(name, batch) and single:
                out.setdefault(f"{name}_vs_one_adapter", {})[batch] = round(speed(name, batch) / max(single), 3)
        if speed("decoder", batch) and speed("generate", batch):
            out.setdefault("decoder_vs_generate", {})[batch] = round(speed("decoder", batch) / speed("generate", batch),
                                                                     3)
    return out


def targets(results: dict[str, Any], size: str, device: str) -> dict[str, Any]:
    """Issue 25's targets against what was measured; they apply to size 7b on CUDA only."""
    mod2 = [row["tokens_per_s"] for row in results.get("mod2", {}).values()
            if isinstance(row, dict) and "tokens_per_s" in row]
    ratio = ratios(results)
    worst = min([*ratio.get("mod2_vs_one_adapter", {}).values(), *ratio.get("mod3_vs_one_adapter", {}).values()],
                default=None)
    applies = size == "7b" and device == "cuda"
    best = max(mod2, default=None)
    return {
        "applies": applies,
        "note": None if applies else "the targets are for size 7b on a GPU; these figures are a plumbing check",
        "mod2_tokens_per_s_target": TARGETS["mod2_tokens_per_s"],
        "mod2_best_tokens_per_s": best,
        "mod2_met": (best >= TARGETS["mod2_tokens_per_s"]) if applies and best is not None else None,
        "mod_vs_one_adapter_target": TARGETS["mod_vs_one_adapter"],
        "mod_vs_one_adapter_worst": worst,
        "mod_vs_one_adapter_met": (worst >= TARGETS["mod_vs_one_adapter"]) if applies and worst is not None else None,
    }


def check_phase(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """MOD's tokens against the naive loop, in float32 on a tiny random Llama on the device."""
    import device_checks as dc

    model, tokenizer, words, adapters = dc.random_setup("tiny", root, device=args.device, seed=args.seed)
    bank = dc.make_bank(model, adapters, "float32")
    prompts = dc.prompts_for(tokenizer, words, args.check_prompts, args.seed + 1)
    return dc.check_mod(bank, tokenizer, prompts, new_tokens=args.check_tokens, batch_size=len(prompts),
                        require_exact=True)


def measure(args: argparse.Namespace, path: Path, seconds: float) -> dict[str, Any]:
    """The device work: the check, then the model and every measured phase, within ``seconds``. The report already
    at ``path`` (the parent's header and setup) is extended and rewritten after every cell, so the JSON file keeps
    what was measured even when the whole run is stopped; the record is returned."""
    deadline = time.monotonic() + seconds
    data: dict[str, Any] = {}
    if path.exists():
        with contextlib.suppress(ValueError):
            data = json.loads(path.read_text())
    data["device_info"] = _gpu_check().device_info(args.device)

    def save() -> None:
        atomic_write_json(path, data)

    save()
    with tempfile.TemporaryDirectory(prefix="models-", dir=args.work_dir) as tmp:
        if "check" in args.phases:
            try:
                data["check"] = {"mod_float32": check_phase(args, Path(tmp) / "check")}
            except Exception as exc:
                data["check"] = {"mod_float32": {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:800],
                                                 "traceback": _tail(traceback.format_exc(), 2000)}}
            logger.info("check: MOD equals the naive loop in float32: %s", data["check"]["mod_float32"].get("ok"))
            gc.collect()
            save()
        if any(p in args.phases for p in MEASURED):
            bench = Bench(args, data, save, deadline)
            data["memory_kind"] = bench.device.memory_kind()
            try:
                bench.build(Path(tmp) / "adapters")
                save()
                bench.run()
            finally:
                bench.bank = None
                bench.device.free()
    data["measure_seconds"] = round(seconds - (deadline - time.monotonic()), 1)
    save()
    return data


def worker(args: argparse.Namespace) -> None:
    """The child that touches the device."""
    import warnings

    import torch

    warnings.filterwarnings("ignore")
    for name in ("transformers", "peft", "sipo"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if args.threads:
        torch.set_num_threads(args.threads)
    measure(args, Path(args.fragment), args.worker_seconds)


def run_inline(args: argparse.Namespace, out: Path, seconds: float) -> dict[str, Any]:
    """:func:`measure` in this process (``--inline``: no second interpreter to start, no hard stop at the
    deadline); the tests use it."""
    start = time.monotonic()
    try:
        data = measure(args, out, seconds)
        status: dict[str, Any] = {"ok": True}
    except Exception as exc:
        data = json.loads(out.read_text())
        status = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:800],
                  "output_tail": _tail(traceback.format_exc())}
    data["worker"] = {**status, "inline": True, "timed_out": False,
                      "seconds": round(time.monotonic() - start, 1)}
    return data


# ----------------------------------------------------------------------------------------- the parent process


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"decode_bench.py: error: {message} (see --help)\n")


def _pair(text: str, name: str, parser: argparse.ArgumentParser) -> tuple[int, int]:
    try:
        low, high = (int(v) for v in text.split(","))
    except ValueError:
        parser.error(f"{name}: two comma-separated integers, low,high")
    if not 1 <= low <= high:
        parser.error(f"{name}: 1 <= low <= high")
    return low, high


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = _Parser(description="Decoding and scoring throughput at Llama-2-7B shape (or tiny, on a CPU); one "
                                 "JSON file.", formatter_class=argparse.RawDescriptionHelpFormatter,
                     epilog=(__doc__ or "").split("\n\n", 1)[1])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--size", choices=("7b", "1b", "tiny"), default=None,
                        help="the random Llama (default: 7b on cuda, tiny on cpu)")
    parser.add_argument("--dtype", choices=("bfloat16", "float32"), default=None,
                        help="of the measured model (default bfloat16 on cuda, float32 on cpu)")
    parser.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated, of {', '.join(PHASES)}")
    parser.add_argument("--batches", default=",".join(map(str, BATCHES)), help="batch sizes (default 1,16,64,128)")
    parser.add_argument("--search", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure the largest batch that fits (default on)")
    parser.add_argument("--search-max", type=int, default=1024, help="the largest batch the search tries")
    parser.add_argument("--search-tries", type=int, default=3, help="runs the search may spend per phase")
    parser.add_argument("--new-tokens", type=int, default=None, help="tokens per prompt (default 64; 8 tiny)")
    parser.add_argument("--prompt-words", default=None, help="low,high words per prompt (default 16,64; 4,12 tiny)")
    parser.add_argument("--responses", type=int, default=None,
                        help="responses scored per cell, rounded up to whole batches (default 64; 8 tiny)")
    parser.add_argument("--responses-per-prompt", type=int, default=4, help="responses sharing a prompt (scoring)")
    parser.add_argument("--response-words", default=None,
                        help="low,high words per scored response (default 32,192; 4,16 tiny)")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per cell (the median is reported)")
    parser.add_argument("--warmup-each", action="store_true",
                        help="an untimed warm-up before every cell (default: before each phase's first cell)")
    parser.add_argument("--check-prompts", type=int, default=4, help="prompts of the MOD equivalence check")
    parser.add_argument("--check-tokens", type=int, default=8, help="tokens per prompt there")
    parser.add_argument("--budget", type=float, default=450.0,
                        help="seconds for the whole run (default 450: with start-up, within 8 minutes)")
    parser.add_argument("--out", default=None,
                        help="the JSON file (default $OUT/decode_bench.json when OUT is set, else "
                             "runs/decode_bench.json)")
    parser.add_argument("--wheels", default=str(REPO / "wheels"), help="folder of wheels for the setup phase")
    parser.add_argument("--work-dir", default=None, help="the child's scratch folder (default: a new temp folder)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads of the child (0: torch's default)")
    parser.add_argument("--inline", action="store_true",
                        help="measure in this process (no child, no hard stop at the deadline; for tests)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--site", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--fragment", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--worker-seconds", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.phases = [p for p in args.phases.split(",") if p]
    unknown = sorted(set(args.phases) - set(PHASES))
    if unknown or not args.phases:
        parser.error(f"--phases: {'unknown ' + ', '.join(unknown) if unknown else 'none given'} (have "
                     f"{', '.join(PHASES)})")
    try:
        args.batches = sorted({int(b) for b in args.batches.split(",") if b})
    except ValueError:
        parser.error("--batches: comma-separated integers")
    if not args.batches or args.batches[0] < 1 or args.budget <= 0 or args.repeats < 1 or args.search_tries < 0:
        parser.error("--batches, --budget and --repeats must be positive, --search-tries at least 0")
    args.size = args.size or ("7b" if args.device == "cuda" else "tiny")
    tiny = args.size == "tiny"
    args.dtype = args.dtype or ("bfloat16" if args.device == "cuda" else "float32")
    args.new_tokens = args.new_tokens or (8 if tiny else 64)
    args.responses = args.responses or (8 if tiny else 64)
    args.prompt_words = _pair(args.prompt_words or ("4,12" if tiny else "16,64"), "--prompt-words", parser)
    args.response_words = _pair(args.response_words or ("4,16" if tiny else "32,192"), "--response-words", parser)
    if args.new_tokens < 1 or args.responses < 1 or args.responses_per_prompt < 1:
        parser.error("--new-tokens, --responses and --responses-per-prompt must be positive")
    return args


def _worker_command(args: argparse.Namespace, fragment: Path, seconds: float) -> list[str]:
    keep = ["--device", args.device, "--size", args.size, "--dtype", args.dtype,
            "--phases", ",".join(p for p in args.phases if p != "setup"),
            "--batches", ",".join(map(str, args.batches)), "--search" if args.search else "--no-search",
            "--search-max", str(args.search_max), "--search-tries", str(args.search_tries),
            "--new-tokens", str(args.new_tokens), "--prompt-words", ",".join(map(str, args.prompt_words)),
            "--responses", str(args.responses), "--responses-per-prompt", str(args.responses_per_prompt),
            "--response-words", ",".join(map(str, args.response_words)), "--repeats", str(args.repeats),
            "--check-prompts", str(args.check_prompts), "--check-tokens", str(args.check_tokens),
            "--threads", str(args.threads), "--seed", str(args.seed), "--work-dir", str(args.work_dir)]
    if args.warmup_each:
        keep.append("--warmup-each")
    return [sys.executable, str(Path(__file__).resolve()), "--worker", "--fragment", str(fragment),
            "--worker-seconds", f"{seconds:.0f}", *keep]


def run_worker(args: argparse.Namespace, env: dict[str, str], out: Path, seconds: float) -> dict[str, Any]:
    """The child, in a process group of its own, stopped at ``seconds`` + a grace of 30 s; it extends the report
    at ``out`` and logs to ``out`` with the suffix ``.log``; the report is read back."""
    log = out.with_suffix(".log")
    command = _worker_command(args, out, seconds)
    start = time.monotonic()
    with open(log, "w") as handle:
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT,
                                start_new_session=True)
        timed_out = False
        try:
            proc.wait(timeout=seconds + 30)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            if proc.poll() is None:
                for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, sig)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(timeout=wait)
                        break
    data: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(out.read_text())
    output = log.read_text(errors="replace")
    status = {"rc": proc.returncode, "seconds": round(time.monotonic() - start, 1), "timed_out": timed_out,
              "ok": proc.returncode == 0 and not timed_out}
    if not status["ok"]:
        status["output_tail"] = _tail(output)
    data["worker"] = status
    return data


def failures_of(data: dict[str, Any], phases: list[str]) -> tuple[list[str], list[str]]:
    """(what failed, what did not run) in a finished report."""
    failed, incomplete = [], []
    if data.get("setup", {}).get("ok") is False:
        failed.append("setup")
    if data.get("worker", {}).get("ok") is False:
        (incomplete if data["worker"].get("timed_out") else failed).append("worker")
    if "check" in phases and data.get("check", {}).get("mod_float32", {}).get("ok") is not True:
        failed.append("check.mod_float32")
    for phase in MEASURED:
        if phase not in phases:
            continue
        rows = data.get("measurements", {}).get(phase)
        if not rows:
            incomplete.append(phase)
            continue
        for batch, row in rows.items():
            if row.get("ok") is False:
                failed.append(f"{phase}.{batch}")
            elif "skipped" in row:
                incomplete.append(f"{phase}.{batch}")
    return failed, incomplete


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s decode_bench: %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stderr, force=args.worker)
    if args.worker:
        worker(args)
        return 0
    started = time.monotonic()
    deadline = started + args.budget
    out = Path(args.out) if args.out else (Path(os.environ["OUT"]) / "decode_bench.json" if os.environ.get("OUT")
                                           else REPO / "runs" / "decode_bench.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="sipo-decode-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    args.work_dir = str(work)
    args.site = args.site or str(work / "site")
    report: dict[str, Any] = {
        "script": "scripts/decode_bench.py", "started_at": _now(), "argv": list(argv if argv is not None else
                                                                               sys.argv[1:]),
        "device": args.device, "size": args.size, "dtype": args.dtype, "budget_s": args.budget,
        "phases": args.phases, "batches": args.batches, "new_tokens": args.new_tokens,
        "prompt_words": list(args.prompt_words), "response_words": list(args.response_words),
        "repeats": args.repeats, "search": args.search, "search_max": args.search_max,
    }
    atomic_write_json(out, report)
    logger.info("device %s, size %s, %s, budget %.0f s, phases %s; JSON -> %s", args.device, args.size, args.dtype,
                args.budget, ",".join(args.phases), out)
    gpu_check = _gpu_check()
    if "setup" in args.phases:
        report["setup"] = gpu_check.setup(args)
        atomic_write_json(out, report)
        logger.info("setup: ok=%s", report["setup"].get("ok"))
    if any(p != "setup" for p in args.phases):
        seconds = deadline - time.monotonic() - 35  # the grace after the child's own deadline, and the merge
        if seconds < 10:
            report["worker"] = {"ok": False, "timed_out": True, "skipped": f"time budget: {seconds:.0f} s left"}
        elif args.inline:
            report.update(run_inline(args, out, seconds))
        else:
            report.update(run_worker(args, gpu_check.child_env(args), out, seconds))
    failed, incomplete = failures_of(report, args.phases)
    report.update(finished_at=_now(), wall_s=round(time.monotonic() - started, 1), failures=failed,
                  incomplete=incomplete, ok=not failed and not incomplete)
    atomic_write_json(out, report)
    logger.info("%s in %.0f s; failures: %s; incomplete: %s; JSON: %s", "OK" if report["ok"] else "NOT OK",
                report["wall_s"], failed or "none", incomplete or "none", out)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
