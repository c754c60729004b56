#!/usr/bin/env python3
"""One command that checks and measures sipo on a GPU (or, with ``--device cpu --size tiny``, on a CPU), within a
time budget, and writes every figure to one JSON file.

Phases (``--phases`` picks some):

  setup    install what the machine lacks of trl, omegaconf, moocore and datasets from the wheels in ``--wheels``
           (``pip install --no-index``; scripts/fetch_gpu_wheels.sh downloads them where PyPI is reachable), and
           put this checkout's src/ on PYTHONPATH for every child process
  checks   on the device, random models built from a config (scripts/device_checks.py; ``--checks`` picks some): batched
           MOD gives the naive per-adapter loop's tokens (float32: required; bfloat16: agreement reported);
           batched implicit rewards and one-at-a-time scoring, each against a float64 truth (float32: the
           batched path about as accurate as the one-at-a-time one; bfloat16: both errors reported); the soup
           maths
  timings  on a random Llama (``--size 1b``: ~1.1B parameters), in bfloat16 on CUDA (float32 on a CPU): MOD with 2
           and 3 adapters, one-adapter decoding (sipo's decoder and transformers' generate) and batched scoring at
           batch 1, 16 and 64, with the naive reference loop's ratio beside them; peak device memory
  tests    pytest on tests/gpu: ``-m gpu`` (the CUDA variants) with ``--device cuda``, their CPU twins otherwise
  presets  configs/smoke.yaml and configs/demo.yaml with model.device=<device>, in bfloat16 and in float32

setup runs first, then the timings, alone on the device (``--reserve`` seconds of the budget are kept for the rest),
then checks, tests and presets at the same time (none of them is a timing, and the GPU has room for all). Each
phase runs in child processes with a deadline; what does not fit in ``--budget`` is recorded as skipped, and the JSON is
rewritten after every phase, so a run cut short keeps what it measured. Exit status: 0 when everything ran and
passed, 1 otherwise (the JSON's ``failures`` and ``incomplete`` say what), 2 for a bad argument.

On the lent H200 (through the ``run`` tool, carrying the ignored wheels/ folder), or on any GPU machine::

    bash scripts/fetch_gpu_wheels.sh                  # where PyPI is reachable: wheels/ (about 6 MB)
    python3 scripts/gpu_check.py --device cuda --size 1b --wheels wheels --budget 450

On a CPU (what CI runs, with a shorter budget and fewer phases)::

    python scripts/gpu_check.py --device cpu --size tiny --phases setup,checks,timings --budget 120
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
sys.path.insert(0, str(SRC))  # sipo.artifacts is plain Python: usable before the setup phase installs anything
sys.path.insert(0, str(REPO / "scripts"))  # device_checks.py, the checks themselves (test tooling, not in the package)

from sipo.artifacts import atomic_write_json, atomic_write_text  # noqa: E402

REQUIREMENTS = ("trl>=1.0,<2", "omegaconf>=2.3,<3", "moocore>=0.1.5", "datasets>=3.0,<6")
"""What a GPU image with torch, transformers, peft and accelerate lacks (bounds as in pyproject.toml)."""
PHASES = ("setup", "checks", "timings", "tests", "presets")
BATCHES = (1, 16, 64)
PRESETS = ("smoke", "demo")
CHECKS = ("mod", "scoring", "soup")
"""The checks phase's checks (``--checks``): MOD's tokens, scoring against the float64 truth, the soup maths."""
DTYPES = ("bfloat16", "float32")
MIN_JOB_S = 30
"""Tests and presets are not started with less time left than this."""
TAIL = 3000
"""Characters of a failed child's output kept in the JSON."""


# --------------------------------------------------------------------------------------------- the JSON file


class Report:
    """The JSON document, rewritten atomically after every change that matters."""

    def __init__(self, path: Path):
        self.path = path
        self.data: dict[str, Any] = {}

    def save(self) -> None:
        atomic_write_json(self.path, self.data)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _tail(text: str, size: int = TAIL) -> str:
    return text if len(text) <= size else "..." + text[-size:]


def _guarded(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run one check or measurement; an exception becomes a failed record instead of ending the run."""
    try:
        return fn()
    except Exception as exc:  # a one-shot GPU run reports every failure, not only the first
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:1000],
                "traceback": _tail(traceback.format_exc(), 2000)}


# ------------------------------------------------------------------------------------------------- the shell


def child_env(args: argparse.Namespace) -> dict[str, str]:
    """The environment of every child: src/ (and the setup phase's fallback folder, when used) on PYTHONPATH,
    nothing downloaded, no progress bars."""
    env = dict(os.environ)
    paths = [str(SRC), *([args.site] if Path(args.site).is_dir() else []), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", SIPO_NO_PROGRESS="1", PYTHONUNBUFFERED="1",
               TOKENIZERS_PARALLELISM="false")
    return env


def setup(args: argparse.Namespace) -> dict[str, Any]:
    """Install the missing requirements from ``--wheels`` (no index: the GPU machine reaches no registry)."""
    modules = [r.split(">")[0].split("<")[0].split("=")[0] for r in REQUIREMENTS]
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    result: dict[str, Any] = {"python": platform.python_version(), "executable": sys.executable,
                              "missing_before": missing, "pythonpath": str(SRC)}
    if missing:
        wheels = Path(args.wheels)
        if not wheels.is_dir():
            result.update(ok=False, error=f"{missing} missing and no wheel folder '{wheels}' (run "
                                          "scripts/fetch_gpu_wheels.sh where PyPI is reachable, and carry wheels/)")
            return result
        command = [sys.executable, "-m", "pip", "install", "--no-index", "--find-links", str(wheels),
                   "--disable-pip-version-check", "--quiet", *REQUIREMENTS]
        start = time.monotonic()
        proc = subprocess.run(command, capture_output=True, text=True, timeout=600)
        result.update(pip_rc=proc.returncode, pip_seconds=round(time.monotonic() - start, 1),
                      pip_output=_tail(proc.stdout + proc.stderr))
        if proc.returncode != 0:  # e.g. a read-only environment: the wheels alone, into a folder of their own
            result["fallback"] = _install_into_folder(wheels, Path(args.site))
        importlib.invalidate_caches()
    result["missing_after"] = [m for m in modules if importlib.util.find_spec(m) is None]
    from importlib import metadata

    versions = {}
    for name in ("torch", "transformers", "peft", "accelerate", "trl", "datasets", "omegaconf", "moocore", "pyarrow",
                 "numpy"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    result["versions"] = versions
    result["ok"] = not result["missing_after"]
    return result


def _install_into_folder(wheels: Path, site: Path) -> dict[str, Any]:
    """``pip install --no-deps --target site`` of the newest wheel of each distribution in ``wheels`` that this
    interpreter can use and that is not installed yet; ``site`` goes on ``sys.path`` and on the children's
    PYTHONPATH. No dependency resolution: the last resort when pip cannot install into the environment."""
    from importlib import metadata

    from packaging.tags import sys_tags
    from packaging.utils import parse_wheel_filename

    rank = {tag: i for i, tag in enumerate(sys_tags())}  # most specific first: py312 before py310 on 3.12
    best: dict[str, tuple[Any, int, Path]] = {}
    for wheel in sorted(wheels.glob("*.whl")):
        name, version, _, tags = parse_wheel_filename(wheel.name)
        fit = min((rank[t] for t in tags if t in rank), default=None)
        if fit is not None and (name not in best or (version, -fit) > (best[name][0], -best[name][1])):
            best[name] = (version, fit, wheel)
    files = []
    for name, (_, _, wheel) in sorted(best.items()):
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            files.append(wheel)
    if not files:
        return {"site": str(site), "wheels": [], "pip_rc": None}
    command = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--no-compile",
               "--disable-pip-version-check", "--quiet", "--target", str(site), *map(str, files)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if proc.returncode == 0 and str(site) not in sys.path:
        sys.path.insert(0, str(site))
    return {"site": str(site), "wheels": [f.name for f in files], "pip_rc": proc.returncode,
            "pip_output": _tail(proc.stdout + proc.stderr)}


class Job:
    """A child process in its own process group (so a deadline ends it and everything it started)."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], log_dir: Path):
        self.name, self.command = name, command
        self.log = log_dir / f"{name}.log"
        self.started = time.monotonic()
        self.handle = open(self.log, "w")  # noqa: SIM115 - closed in finish()
        self.proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=self.handle, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.timed_out = False
        self.ended: float | None = None

    def stop(self) -> None:
        """SIGTERM to the group, then SIGKILL after 10 s."""
        self.timed_out = True
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=wait)
                return

    def running(self) -> bool:
        """Whether the process still runs; notes when it ended."""
        if self.proc.poll() is None:
            return True
        if self.ended is None:
            self.ended = time.monotonic()
        return False

    def finish(self) -> dict[str, Any]:
        self.running()
        self.handle.close()
        return {"command": " ".join(self.command), "rc": self.proc.returncode,
                "seconds": round((self.ended or time.monotonic()) - self.started, 1), "timed_out": self.timed_out}

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def run_jobs(jobs: list[Job], deadline: float) -> None:
    """Wait for every job; stop those still running at ``deadline``, or when this process is interrupted (the jobs
    run in process groups of their own, which a Ctrl-C or a SIGTERM of this process does not reach)."""
    try:
        while [job for job in jobs if job.running()]:
            if time.monotonic() >= deadline:
                break
            time.sleep(0.5)
    finally:
        for job in jobs:
            if job.running():
                job.stop()
                job.running()


def preset_result(job: Job, run_dir: Path) -> dict[str, Any]:
    """A preset run's exit, its stages' seconds (from the manifests) and each method's hypervolume."""
    result = job.finish()
    stages = {}
    for manifest in sorted(run_dir.glob("**/manifest.json")):
        with contextlib.suppress(OSError, ValueError):
            stages[str(manifest.parent.relative_to(run_dir))] = json.loads(manifest.read_text()).get("seconds")
    result["stage_seconds"] = stages
    report = run_dir / "report" / "report.json"
    if report.exists():
        methods = json.loads(report.read_text()).get("methods", {})
        result["hypervolume"] = {name: entry.get("hypervolume") for name, entry in methods.items()}
    result["ok"] = result["rc"] == 0 and not job.timed_out and report.exists()
    if not result["ok"]:
        result["output_tail"] = _tail(job.output())
    return result


def tests_result(job: Job, junit: Path) -> dict[str, Any]:
    """pytest's exit and the counts and failures of its JUnit XML."""
    result = job.finish()
    if junit.exists():
        root = ET.parse(junit).getroot()
        suite = root if root.tag == "testsuite" else root.find("testsuite")
        if suite is not None:
            result.update({k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")})
            failed = []
            for case in suite.iter("testcase"):
                problem = case.find("failure")
                if problem is None:
                    problem = case.find("error")
                if problem is not None:
                    failed.append({"test": f"{case.get('classname')}::{case.get('name')}",
                                   "message": (problem.get("message") or "")[:500]})
            result["failed"] = failed
    result["ok"] = result["rc"] == 0 and not job.timed_out
    if not result["ok"]:
        result["output_tail"] = _tail(job.output())
    return result


def worker_job(args: argparse.Namespace, env: dict[str, str], work: Path, phase: str, seconds: float) -> Job:
    """The child process that runs ``phase`` (checks or timings) on the device, stopping itself after ``seconds``."""
    return Job(f"worker_{phase}", _worker_command(args, phase, work / f"worker_{phase}.json", seconds), env, work)


def worker_result(report: Report, job: Job, work: Path) -> None:
    """Record a worker's exit and merge the figures it wrote (``device_info``, ``model``, ``checks`` or
    ``timings``) into the report."""
    result = job.finish()
    result["ok"] = result["rc"] == 0 and not job.timed_out
    if not result["ok"]:
        result["output_tail"] = _tail(job.output())
    fragment = work / f"{job.name}.json"
    if fragment.exists():
        part = json.loads(fragment.read_text())
        result["seconds_inside"] = part.pop("seconds", None)
        report.data.update(part)
    report.data[job.name] = result


def concurrent_phases(args: argparse.Namespace, report: Report, env: dict[str, str], work: Path,
                      deadline: float) -> None:
    """The device checks, the GPU tests and the preset runs, all at once, until ``deadline`` (none of them is a
    timing: they can share the device)."""
    wanted = [p for p in ("checks", "tests", "presets") if p in args.phases]
    left = deadline - time.monotonic()
    if not wanted:
        return
    if left < MIN_JOB_S:
        for phase in wanted:
            report.data[phase] = {"skipped": f"time budget: {left:.0f} s left, {MIN_JOB_S} s needed"}
        return
    count = len(wanted) - ("presets" in wanted) + len(args.presets) * len(args.dtypes) * ("presets" in wanted)
    if "OMP_NUM_THREADS" not in os.environ:  # the jobs share the CPU cores rather than each taking them all
        env = {**env, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // count))}
    jobs: dict[str, Job] = {}
    if "checks" in args.phases:
        jobs["checks"] = worker_job(args, env, work, "checks", left - 5)
    if "tests" in args.phases:
        marker = "gpu" if args.device == "cuda" else "not gpu"
        jobs["tests"] = Job("tests", [sys.executable, "-m", "pytest", "-q", "-m", marker, "tests/gpu",
                                      "-p", "no:cacheprovider", f"--junitxml={work / 'junit.xml'}"], env, work)
    for preset in args.presets if "presets" in args.phases else ():
        for dtype in args.dtypes:
            name = f"{preset}-{dtype}"
            jobs[name] = Job(name, [sys.executable, "-m", "sipo", "run", f"configs/{preset}.yaml",
                                    f"run_dir={work / name}", f"model.device={args.device}",
                                    f"model.dtype={dtype}"], {**env, "SIPO_CACHE": str(work / "cache")}, work)
    print(f"running at once, for at most {left:.0f} s: {', '.join(jobs)}", flush=True)
    run_jobs(list(jobs.values()), deadline)
    if "checks" in jobs:
        worker_result(report, jobs.pop("checks"), work)
    if "tests" in jobs:
        report.data["tests"] = tests_result(jobs.pop("tests"), work / "junit.xml")
    if jobs:
        report.data["presets"] = {name: preset_result(job, work / name) for name, job in jobs.items()}


# ------------------------------------------------------------------------------------ the device worker (child)


def device_info(device: str) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "device": device,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "cuda_available": torch.cuda.is_available(),
    }
    if device == "cuda" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, capability=f"{props.major}.{props.minor}", gpu_memory_gb=round(
            props.total_memory / 2**30, 1), cuda=torch.version.cuda, tf32_matmul=torch.backends.cuda.matmul.allow_tf32)
    from importlib import metadata

    for name in ("transformers", "peft", "trl", "accelerate"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            info[name] = metadata.version(name)
    return info


class Peak:
    """Peak device memory of a call (CUDA only; ``None`` on a CPU)."""

    def __init__(self, device: str):
        import torch

        self.cuda = device == "cuda"
        self.torch = torch

    def wrap(self, fn: Callable[[], Any], peaks: dict[str, float], name: str) -> Callable[[], Any]:
        def run() -> Any:
            if self.cuda:
                self.torch.cuda.synchronize()
                self.torch.cuda.reset_peak_memory_stats()
            out = fn()
            if self.cuda:
                self.torch.cuda.synchronize()
                peaks[name] = max(peaks.get(name, 0.0), self.torch.cuda.max_memory_allocated() / 2**20)
            return out

        return run


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def time_decoding(bank: Any, tokenizer: Any, words: list[str], args: argparse.Namespace, deadline: float,
                  out: dict[str, Any], save: Callable[[], None]) -> None:
    """MOD (2 and 3 adapters) and one-adapter decoding at each batch size; the naive reference loop after the
    first."""
    from dataclasses import replace

    import device_checks as dc
    import speed  # benchmarks/speed.py: the timing rounds and transformers' generate with one adapter

    from sipo.decoding.mod import mod_generate_token_ids

    peak = Peak(args.device)
    tokens = args.new_tokens
    decoding = out.setdefault("decoding", {})
    for batch in args.batches:
        if time.monotonic() >= deadline:
            decoding[str(batch)] = {"skipped": "time budget"}
            continue
        prompts = dc.prompts_for(tokenizer, words, batch, args.seed + 100 + batch)
        settings = replace(speed.Settings(), new_tokens=tokens, mod_batch_size=batch)

        def mod(mix: dict[str, float], prompts: list[str] = prompts, batch: int = batch) -> list[list[int]]:
            return mod_generate_token_ids(bank, tokenizer, prompts, [mix] * len(prompts), max_new_tokens=tokens,
                                          batch_size=batch, progress=False)

        peaks: dict[str, float] = {}
        fns = {
            "mod_2_adapters": lambda mod=mod: mod(dc.MIX2),
            "mod_3_adapters": lambda mod=mod: mod(dc.MIX3),
            "one_adapter": lambda mod=mod: mod({"obj0": 1.0}),
            "one_adapter_generate": lambda p=prompts, s=settings: speed._generate_one_adapter(bank, tokenizer, p, s),
        }
        times, results = speed._rounds({k: peak.wrap(f, peaks, k) for k, f in fns.items()}, args.repeats)
        row: dict[str, Any] = {"prompts": batch, "new_tokens": tokens,
                               "prompt_tokens": _lengths(tokenizer, prompts)}
        for name, seconds in times.items():
            generated = sum(map(len, results[name]))
            median = _median(seconds)
            row[name] = {"seconds": round(median, 4), "rounds": [round(t, 4) for t in seconds], "tokens": generated,
                         "tokens_per_s": round(generated / median, 1) if median > 0 else None,
                         "peak_memory_mb": round(peaks[name], 1) if name in peaks else None}
        single = min(row[k]["seconds"] / max(row[k]["tokens"], 1) for k in ("one_adapter", "one_adapter_generate"))
        for name in ("mod_2_adapters", "mod_3_adapters"):
            per_token = row[name]["seconds"] / max(row[name]["tokens"], 1)
            row[f"{name}_vs_one_adapter"] = round(single / per_token, 3)
        row["one_adapter_equals_generate"] = sum(
            a == b for a, b in zip(results["one_adapter"], results["one_adapter_generate"]))
        row["mixes_change_output"] = sum(a != b for a, b in zip(results["mod_2_adapters"], results["one_adapter"]))
        decoding[str(batch)] = row
        save()
        if batch == args.batches[0]:  # the loop's ratio must not be the part a short budget cuts
            time_reference_loop(bank, tokenizer, words, args, deadline, out, save)
        print(f"timed decoding at batch {batch}: MOD 2 adapters {row['mod_2_adapters']['tokens_per_s']} tok/s, "
              f"{row['mod_2_adapters_vs_one_adapter']}x one adapter", flush=True)

    link_reference(out)


def time_reference_loop(bank: Any, tokenizer: Any, words: list[str], args: argparse.Namespace, deadline: float,
                        out: dict[str, Any], save: Callable[[], None]) -> None:
    """The naive MOD loop (one prompt, per token one batch-1 forward per adapter plus a base forward), timed once
    after a 2-token warm-up, with 2 and with 3 adapters."""
    import device_checks as dc

    from sipo.decoding.mod import mod_generate_reference_token_ids

    reference = out.setdefault("reference_loop", {})
    prompt = dc.prompts_for(tokenizer, words, 1, args.seed + 7)
    for name, mix in (("mod_2_adapters", dc.MIX2), ("mod_3_adapters", dc.MIX3)):
        if time.monotonic() >= deadline:
            reference[name] = {"skipped": "time budget"}
            continue
        mod_generate_reference_token_ids(bank, tokenizer, prompt, [mix], max_new_tokens=2)  # warm-up
        start = time.perf_counter()
        ids = mod_generate_reference_token_ids(bank, tokenizer, prompt, [mix], max_new_tokens=args.new_tokens)
        seconds = time.perf_counter() - start
        reference[name] = {"prompts": 1, "tokens": len(ids[0]), "seconds": round(seconds, 4),
                           "tokens_per_s": round(len(ids[0]) / seconds, 1)}
        save()


def link_reference(out: dict[str, Any]) -> None:
    """Beside each batch size's MOD-vs-one-adapter ratio, the reference loop's: per generated token, the faster
    one-adapter decoder's time over the loop's (``reference_vs_one_adapter_at_<batch>``), and the batched MOD's
    speed-up over the loop (``batched_at_<batch>_vs_reference``)."""
    for name, entry in out.get("reference_loop", {}).items():
        if "seconds" not in entry:
            continue
        per_token = entry["seconds"] / max(entry["tokens"], 1)
        for batch, row in out.get("decoding", {}).items():
            if name not in row:
                continue
            fast = row[name]["seconds"] / max(row[name]["tokens"], 1)
            single = min(row[k]["seconds"] / max(row[k]["tokens"], 1) for k in ("one_adapter", "one_adapter_generate"))
            entry[f"batched_at_{batch}_vs_reference"] = round(per_token / fast, 2)
            entry[f"reference_vs_one_adapter_at_{batch}"] = round(single / per_token, 4)


def _lengths(tokenizer: Any, texts: list[str], prompt: bool = True) -> dict[str, float]:
    from sipo.models.loading import encode_prompt, encode_response

    counts = [len(encode_prompt(tokenizer, t, None) if prompt else encode_response(tokenizer, t, None))
              for t in texts]
    return {"min": min(counts), "max": max(counts), "mean": round(sum(counts) / len(counts), 1)}


def time_scoring(bank: Any, tokenizer: Any, words: list[str], args: argparse.Namespace, deadline: float,
                 out: dict[str, Any], save: Callable[[], None]) -> None:
    """Batched implicit rewards (2 adapters + 4 soups) at each batch size, and the one-at-a-time reference on a
    few responses (its time extrapolated per response, and said so)."""
    import device_checks as dc
    import speed

    from sipo.scoring.implicit import implicit_rewards, implicit_rewards_reference

    per_prompt = 8
    pool = dc.prompts_for(tokenizer, words, -(-args.responses // per_prompt), args.seed + 3)
    prompts = [pool[i // per_prompt] for i in range(args.responses)]
    responses = dc.texts(words, args.responses, 8, 56, args.seed + 5)
    scoring = out.setdefault("scoring", {"responses": args.responses, "prompts": len(pool),
                                         "judges": len(dc.JUDGES), "response_tokens": _lengths(
                                             tokenizer, responses, prompt=False)})
    peak = Peak(args.device)
    for batch in args.batches:
        if time.monotonic() >= deadline:
            scoring[str(batch)] = {"skipped": "time budget"}
            continue
        peaks: dict[str, float] = {}
        fn = peak.wrap(lambda b=batch: implicit_rewards(bank, tokenizer, prompts, responses, dc.JUDGES,
                                                        beta=dc.BETA, batch_size=b), peaks, "scoring")
        times, _ = speed._rounds({"scoring": fn}, args.repeats)
        median = _median(times["scoring"])
        scoring[str(batch)] = {"seconds": round(median, 4), "rounds": [round(t, 4) for t in times["scoring"]],
                               "responses_per_s": round(args.responses / median, 1),
                               "peak_memory_mb": round(peaks["scoring"], 1) if peaks else None}
        save()
    if time.monotonic() >= deadline:
        scoring["reference"] = {"skipped": "time budget"}
        return
    subset = list(range(0, args.responses, max(1, args.responses // args.reference_responses)))
    subset = subset[:args.reference_responses]
    start = time.perf_counter()
    implicit_rewards_reference(bank, tokenizer, [prompts[i] for i in subset], [responses[i] for i in subset],
                               dc.JUDGES, beta=dc.BETA)
    seconds = time.perf_counter() - start
    per_response = seconds / len(subset)
    entry: dict[str, Any] = {"measured_responses": len(subset), "measured_seconds": round(seconds, 3),
                             "seconds_extrapolated": round(per_response * args.responses, 3),
                             "note": f"measured on {len(subset)} of {args.responses} responses, scaled per response"}
    for batch in args.batches:
        row = scoring.get(str(batch), {})
        if "seconds" in row:
            entry[f"batched_at_{batch}_vs_reference"] = round(per_response * args.responses / row["seconds"], 2)
    scoring["reference"] = entry
    save()


def worker(args: argparse.Namespace) -> None:
    """The child that touches the device: checks, then timings; its record goes to ``--fragment``."""
    import gc
    import logging
    import warnings

    import torch

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    sys.path.insert(0, str(REPO / "benchmarks"))
    import device_checks as dc

    deadline = time.monotonic() + args.worker_seconds
    fragment: dict[str, Any] = {"device_info": device_info(args.device)}
    path = Path(args.fragment)

    def save() -> None:
        atomic_write_json(path, fragment)

    def free() -> None:
        gc.collect()
        if args.device == "cuda":
            torch.cuda.empty_cache()

    save()
    with tempfile.TemporaryDirectory(prefix="models-", dir=path.parent) as tmp:
        start = time.perf_counter()
        model, tokenizer, words, adapters = dc.random_setup(args.size, tmp, device=args.device, seed=args.seed)
        fragment["model"] = {"size": args.size, "parameters": sum(p.numel() for p in model.parameters()),
                             "vocabulary": len(tokenizer), **{k: v for k, v in dc.SIZES[args.size].items()
                                                              if k != "vocabulary"},
                             "lora": "r 8, alpha 16, q/k/v/o; 3 adapters + 4 soups",
                             "build_seconds": round(time.perf_counter() - start, 1)}
        save()
        if "checks" in args.phases:
            checks = fragment.setdefault("checks", {})
            prompts = dc.prompts_for(tokenizer, words, args.check_prompts, args.seed + 1)
            shared = [prompts[i // 4] for i in range(2 * 4)]  # 2 prompts x 4 responses: shared-prompt batches
            pairs = (shared + prompts,
                     dc.texts(words, len(shared), 4, 40, args.seed + 2) + dc.texts(words, len(prompts), 4, 40, 9))
            truth = None
            if "scoring" in args.checks:  # the float64 truth of both dtypes' scoring, one response at a time
                truth = _guarded(lambda: dc.scoring_truth(model, adapters, tokenizer, *pairs))
                checks["scoring_truth_seconds"] = truth.get("seconds")
                free()
            for dtype in DTYPES[::-1]:  # float32 first: the exact checks
                exact = dtype == "float32"
                bank = dc.make_bank(model, adapters, dtype)
                if "mod" in args.checks:
                    checks[f"mod_{dtype}"] = _guarded(lambda b=bank, e=exact: dc.check_mod(
                        b, tokenizer, prompts, new_tokens=args.check_tokens, batch_size=len(prompts),
                        require_exact=e))
                    save()
                if truth is not None:
                    checks[f"scoring_{dtype}"] = truth if truth.get("ok") is False else _guarded(
                        lambda b=bank: dc.check_scoring(b, tokenizer, *pairs, batch_size=4, truth=truth))
                    save()
                del bank
                free()
            if "soup" in args.checks:
                checks["soup_maths"] = _guarded(lambda: dc.check_soup_maths(args.device, root=tmp))
                save()
        if "timings" in args.phases:
            dtype = args.timing_dtype or ("bfloat16" if args.device == "cuda" else "float32")
            bank = dc.make_bank(model, adapters, dtype)
            del model
            free()
            timings = fragment.setdefault("timings", {"dtype": dtype})
            for part in (time_decoding, time_scoring):
                record = _guarded(lambda p=part: p(bank, tokenizer, words, args, deadline, timings, save) or {})
                if record.get("ok") is False:
                    timings.setdefault("errors", []).append(record)
                save()
    fragment["seconds"] = round(args.worker_seconds - (deadline - time.monotonic()), 1)
    save()


# ------------------------------------------------------------------------------------------------------ main


class _Parser(argparse.ArgumentParser):
    """A bad argument: one line on stderr and exit status 2 (no usage block)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"gpu_check.py: error: {message} (see --help)\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = _Parser(
        description="Check and time sipo on a device (cuda or cpu) within a time budget; every figure goes to one JSON file.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(__doc__ or "").split("\n\n", 1)[1],
    )
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--size", choices=("1b", "tiny"), default=None,
                        help="the random Llama of checks and timings (default: 1b on cuda, tiny on cpu)")
    parser.add_argument("--budget", type=float, default=450.0,
                        help="seconds for the whole run (default 450); what does not fit is skipped and recorded")
    parser.add_argument("--reserve", type=float, default=None,
                        help="seconds of the budget kept for tests and presets (default 240 when they are run)")
    parser.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated, of {', '.join(PHASES)}")
    parser.add_argument("--presets", default=",".join(PRESETS), help="configs/<name>.yaml to run (default smoke,demo)")
    parser.add_argument("--dtypes", default=",".join(DTYPES), help="model.dtype of the preset runs")
    parser.add_argument("--out", default=None,
                        help="the JSON file (default $OUT/gpu_check.json when OUT is set, else runs/gpu_check.json)")
    parser.add_argument("--wheels", default=str(REPO / "wheels"), help="folder of wheels for the setup phase")
    parser.add_argument("--site", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--work-dir", default=None, help="where preset runs and logs go (default: a new temp folder)")
    parser.add_argument("--batches", default=",".join(map(str, BATCHES)), help="batch sizes timed (default 1,16,64)")
    parser.add_argument("--new-tokens", type=int, default=None, help="tokens decoded per prompt (default 64; 16 tiny)")
    parser.add_argument("--responses", type=int, default=None, help="responses scored (default 64; 32 tiny)")
    parser.add_argument("--reference-responses", type=int, default=4,
                        help="responses the one-at-a-time scoring reference scores (its time is extrapolated)")
    parser.add_argument("--repeats", type=int, default=2,
                        help="timed rounds after a warm-up round (0: one timed round, cold)")
    parser.add_argument("--checks", default=",".join(CHECKS),
                        help=f"the checks phase's checks, comma-separated, of {', '.join(CHECKS)} (default: all)")
    parser.add_argument("--check-prompts", type=int, default=4, help="prompts of the MOD equivalence check")
    parser.add_argument("--check-tokens", type=int, default=None, help="tokens per prompt there (default 32; 8 tiny)")
    parser.add_argument("--timing-dtype", choices=DTYPES, default=None,
                        help="dtype of the timings (default bfloat16 on cuda, float32 on cpu)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads of the worker (0: torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--fragment", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--worker-seconds", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.phases = [p for p in args.phases.split(",") if p]
    unknown = sorted(set(args.phases) - set(PHASES))
    if unknown:
        parser.error(f"--phases: unknown {', '.join(unknown)} (have {', '.join(PHASES)})")
    args.checks = [c for c in args.checks.split(",") if c]
    unknown = sorted(set(args.checks) - set(CHECKS))
    if unknown or not args.checks:
        parser.error(f"--checks: {'unknown ' + ', '.join(unknown) if unknown else 'none given'} (have "
                     f"{', '.join(CHECKS)})")
    args.presets = [p for p in args.presets.split(",") if p]
    for preset in args.presets:
        if not (REPO / "configs" / f"{preset}.yaml").exists():
            parser.error(f"--presets: no configs/{preset}.yaml")
    args.dtypes = [d for d in args.dtypes.split(",") if d]
    if set(args.dtypes) - set(DTYPES):
        parser.error(f"--dtypes: each of {', '.join(DTYPES)}")
    try:
        args.batches = [int(b) for b in args.batches.split(",") if b]
    except ValueError:
        parser.error("--batches: comma-separated integers")
    if args.budget <= 0 or any(b < 1 for b in args.batches):
        parser.error("--budget and --batches must be positive")
    tiny = (args.size or ("1b" if args.device == "cuda" else "tiny")) == "tiny"
    args.size = "tiny" if tiny else "1b"
    args.new_tokens = args.new_tokens or (16 if tiny else 64)
    args.responses = args.responses or (32 if tiny else 64)
    args.check_tokens = args.check_tokens or (8 if tiny else 32)
    return args


def _worker_command(args: argparse.Namespace, phase: str, fragment: Path, seconds: float) -> list[str]:
    keep = ["--device", args.device, "--size", args.size, "--phases", phase, "--checks", ",".join(args.checks),
            "--batches", ",".join(map(str, args.batches)), "--new-tokens", str(args.new_tokens),
            "--responses", str(args.responses), "--reference-responses", str(args.reference_responses),
            "--repeats", str(args.repeats), "--check-prompts", str(args.check_prompts),
            "--check-tokens", str(args.check_tokens), "--threads", str(args.threads), "--seed", str(args.seed)]
    if args.timing_dtype:
        keep += ["--timing-dtype", args.timing_dtype]
    return [sys.executable, __file__, "--worker", "--fragment", str(fragment), "--worker-seconds", f"{seconds:.0f}",
            *keep]


def failures_of(data: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(what failed, what did not run to the end) in a finished report."""
    failed, incomplete = [], []
    if data.get("setup", {}).get("ok") is False:
        failed.append("setup")
    for phase in ("timings", "checks"):
        if data.get(f"worker_{phase}", {}).get("ok") is False:
            failed.append(f"worker_{phase}")
    for name, check in data.get("checks", {}).items():
        if isinstance(check, dict) and check.get("ok") is False:
            failed.append(f"checks.{name}")
    for record in data.get("timings", {}).get("errors", []):
        failed.append(f"timings: {record.get('error', '')[:200]}")
    for section in ("decoding", "scoring"):
        for key, row in data.get("timings", {}).get(section, {}).items():
            if isinstance(row, dict) and "skipped" in row:
                incomplete.append(f"timings.{section}.{key}")
    for phase in ("checks", "timings", "tests", "presets"):
        if isinstance(data.get(phase, {}).get("skipped"), str):  # (a test report's "skipped" is a count)
            incomplete.append(phase)
    tests = data.get("tests", {})
    if tests.get("ok") is False:
        (incomplete if tests.get("timed_out") else failed).append("tests")
    for name, run in data.get("presets", {}).items():
        if isinstance(run, dict) and run.get("ok") is False:
            (incomplete if run.get("timed_out") else failed).append(f"presets.{name}")
    return failed, incomplete


def phases(args: argparse.Namespace, report: Report, work: Path, deadline: float) -> None:
    """Setup, then the timings alone, then checks, tests and presets at once; the report saved after each."""
    if "setup" in args.phases:
        report.data["setup"] = _guarded(lambda: setup(args))
        report.save()
        print(f"setup: ok={report.data['setup'].get('ok')}", flush=True)
    env = child_env(args)

    if "timings" in args.phases:  # alone on the device, before everything else
        later = {"checks", "tests", "presets"} & set(args.phases)
        reserve = args.reserve if args.reserve is not None else (240.0 if later else 0.0)
        seconds = deadline - time.monotonic() - reserve - 10
        if seconds < MIN_JOB_S:
            report.data["timings"] = {"skipped": f"time budget: {seconds:.0f} s for the timings"}
        else:
            job = worker_job(args, env, work, "timings", seconds)
            run_jobs([job], time.monotonic() + seconds + 60)  # the worker stops itself; this is the backstop
            worker_result(report, job, work)
            print(f"timings: ok={report.data['worker_timings']['ok']}", flush=True)
        report.save()

    concurrent_phases(args, report, env, work, deadline - 5)
    report.save()


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through run_jobs, which stops the children


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    signal.signal(signal.SIGTERM, _terminate)
    started = time.monotonic()
    deadline = started + args.budget
    out = Path(args.out) if args.out else (Path(os.environ["OUT"]) / "gpu_check.json" if os.environ.get("OUT")
                                           else REPO / "runs" / "gpu_check.json")
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="sipo-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    report = Report(out)
    report.data.update(script="scripts/gpu_check.py", started_at=_now(), argv=sys.argv[1:], device=args.device,
                       size=args.size, budget_s=args.budget, phases=args.phases, work_dir=str(work))
    report.save()
    args.site = args.site or str(work / "site")
    print(f"gpu_check: device {args.device}, size {args.size}, budget {args.budget:.0f} s, phases "
          f"{','.join(args.phases)}; JSON -> {out}", flush=True)

    try:
        phases(args, report, work, deadline)
    except (KeyboardInterrupt, SystemExit) as exc:  # the children are stopped by now (run_jobs)
        report.data.update(interrupted=f"{type(exc).__name__} after {time.monotonic() - started:.0f} s",
                           finished_at=_now(), ok=False)
        report.save()
        raise

    failed, incomplete = failures_of(report.data)
    report.data.update(finished_at=_now(), wall_s=round(time.monotonic() - started, 1), failures=failed,
                       incomplete=incomplete, ok=not failed and not incomplete)
    report.save()
    logs = sorted(work.glob("*.log"))
    atomic_write_text(out.with_suffix(".log"), "".join(
        f"===== {log.name}\n{_tail(log.read_text(errors='replace'), 200_000)}\n" for log in logs))
    print(f"gpu_check: {'OK' if report.data['ok'] else 'NOT OK'} in {report.data['wall_s']:.0f} s; "
          f"failures: {failed or 'none'}; incomplete: {incomplete or 'none'}; JSON: {out}", flush=True)
    return 0 if report.data["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
