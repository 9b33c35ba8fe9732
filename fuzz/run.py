#!/usr/bin/env python3
"""A seeded, deterministic fuzz campaign against the host (issue #11).

    python fuzz/run.py --seconds 300              # make fuzz
    python fuzz/run.py --seed 7 --iterations 200  # a fixed campaign
    python fuzz/run.py --seed 7 --replay 123      # one iteration, in this process, with its traceback

Iteration i of seed S is fully determined by (S, i): the source module, mutant or hostile
inputs, the mutations and the values (see drive.make_iteration). Iterations run in worker
subprocesses, in batches, under a watchdog: a worker that dies (SIGSEGV, SIGILL, abort) or
an iteration that runs past --timeout is reported as a finding and the campaign resumes at
i+1 in a fresh worker. Workers report RSS before and after each iteration; growth past
--rss-mb in one iteration is a finding too.

Compiled mutants go to a private compile cache (PROXYWASM_CACHE_DIR in a temp dir, deleted at
the end), never to the user's cache. Reproducers of findings are written to fuzz/findings/
(gitignored: mutants of the Go modules are megabytes).
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
FINDINGS_DIR = HERE / "findings"
FAMILIES = ("wat", "zig", "go", "as", "rust")


# -- campaign description shared by the parent and its workers --------------------------------

@dataclasses.dataclass
class Spec:
    seed: int
    seeds: list[dict]  # sources.Seed as dicts
    modes: tuple[str, ...] = ("mutant", "hostile")
    types: bool = True  # hostile values of wrong types (None, int, lone surrogates)
    timeout: float = 10.0  # seconds per iteration before it counts as a hang (plus compile time)
    compile_secs: dict = dataclasses.field(default_factory=dict)  # per seed, measured by prepare()
    rss_mb: int = 512  # RSS growth in one iteration that counts as a finding


def load_context(spec: Spec):
    """(seeds, {name: seed}, {name: bytes}, name pool): what make_iteration needs."""
    import sources
    seeds = [sources.Seed(**{**d, "kinds": tuple(d["kinds"])}) for d in spec.seeds]
    originals = {s.name: Path(s.path).read_bytes() for s in seeds}
    return seeds, {s.name: s for s in seeds}, originals, name_pool()


def name_pool() -> list[bytes]:
    """Import/export names the renaming mutators swap between (same length only)."""
    import mutate
    import watgen
    names = set(watgen.IMPORTS_COMMON) | set(watgen.IMPORTS_0_2) | set(watgen.IMPORTS_0_2_1)
    names |= set(watgen.IMPORTS_0_1) | set(watgen.SIGNATURES) | set(watgen.DEFAULTS)
    names |= {"proxy_on_memory_allocate", "malloc", "memory", "fd_write", "fd_read", "fd_close", "fd_seek",
              "environ_get", "environ_sizes_get", "clock_time_get", "random_get", "proc_exit", "args_get",
              "args_sizes_get", "sched_yield", "fd_fdstat_get", "wasi_snapshot_preview1", "env"}
    return sorted(n.encode() for n in names) + mutate.ABI_MARKERS


# -- worker ------------------------------------------------------------------------------------

def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def worker(spec: Spec, start: int, stop: int, until: float) -> None:
    """Run iterations [start, stop) until `until` (wall clock), one JSON line per event on
    the original stdout; the guest and the host may print to fd 1, so it goes to stderr."""
    import faulthandler
    faulthandler.enable()  # before the engine exists, as under pytest: a real crash prints a trace
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    import drive
    seeds, by_name, originals, pool = load_context(spec)
    keep = set(os.listdir(os.environ["PROXYWASM_CACHE_DIR"]))
    for i in range(start, stop):
        if time.time() >= until:
            break
        it = drive.make_iteration(spec.seed, i, seeds, originals, pool, spec.modes, spec.types)
        proto.write(json.dumps({"start": i, "source": it.source}) + "\n")
        _selftest(i)
        proto.write(json.dumps(run_one(drive, it, by_name)) + "\n")
        _drop_mutant_cache(keep)
    proto.write(json.dumps({"done": True}) + "\n")


def _selftest(i: int) -> None:
    """PROXYWASM_FUZZ_SELFTEST="crash:3,hang:5" makes iteration 3 die of SIGSEGV and 5 hang:
    how the tests check that the watchdog reports them and the campaign goes on."""
    plan = dict(item.split(":")[::-1] for item in os.environ.get("PROXYWASM_FUZZ_SELFTEST", "").split(",") if item)
    if plan.get(str(i)) == "crash":
        os.kill(os.getpid(), signal.SIGSEGV)
    elif plan.get(str(i)) == "hang":
        time.sleep(3600)


def run_one(drive, it, by_name) -> dict:
    t0, rss0 = time.monotonic(), rss_mb()
    rec = {"i": it.index, "source": it.source, "mode": it.mode, "mutators": it.mutators}
    try:
        outcome = drive.run_iteration(it, by_name)
        rec.update(outcome=outcome.label(), vm_failed=outcome.vm_failed)
    except drive.Finding as f:
        import traceback
        frames = traceback.format_tb(f.exc.__traceback__)[-4:]
        rec.update(outcome="finding", kind=f"exception {type(f.exc).__name__}", step=f.step,
                   message=str(f.exc)[:600], frames="".join(frames))
    rec.update(secs=round(time.monotonic() - t0, 3), rss0=round(rss0), rss1=round(rss_mb()))
    return rec


def _drop_mutant_cache(keep: set[str]) -> None:
    """Mutants are compiled once and never again: keep the private cache to the seeds."""
    cache = os.environ["PROXYWASM_CACHE_DIR"]
    for name in os.listdir(cache):
        if name not in keep:
            try:
                os.unlink(os.path.join(cache, name))
            except OSError:
                pass


# -- parent: batches under a watchdog ----------------------------------------------------------

@dataclasses.dataclass
class Summary:
    seed: int
    iterations: int = 0
    seconds: float = 0.0
    outcomes: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    per_source: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    findings: list[dict] = dataclasses.field(default_factory=list)
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)
    slowest: tuple[float, int] = (0.0, -1)
    max_rss: int = 0
    mutants_loaded: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    vm_failures: collections.Counter = dataclasses.field(default_factory=collections.Counter)


def run_batch(spec: Spec, start: int, stop: int, until: float, env: dict, summary: Summary) -> int:
    """Run a worker on [start, stop); returns the next index to run (stop when complete)."""
    spec_file = Path(env["PROXYWASM_CACHE_DIR"]).parent / "spec.json"
    spec_file.write_text(json.dumps(dataclasses.asdict(spec)))
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "run.py"), "--worker", str(spec_file), "--start", str(start),
             "--stop", str(stop), "--until", str(until)],
            stdout=subprocess.PIPE, stderr=err, env=env, start_new_session=True)
        current, nxt = None, start
        started_at, bound = time.monotonic(), spec.timeout
        buf = b""
        while True:
            line, buf, eof = _read_line(proc, buf, started_at + bound if current is not None else None)
            if line is None and not eof:  # the watchdog fired
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                _finding(summary, spec, {"i": current, "outcome": "finding", "kind": "hang",
                                         "message": f"no result after {bound:.0f} s"})
                return current + 1
            if eof:
                rc = proc.wait()
                if current is None:
                    return nxt if rc == 0 else _worker_failed(rc, err, start)
                _finding(summary, spec, {"i": current, "outcome": "finding", "kind": f"crash ({_signal(rc)})",
                                         "message": _tail(err)})
                return current + 1
            msg = json.loads(line)
            if "start" in msg:
                current, started_at = msg["start"], time.monotonic()
                bound = spec.timeout + 3 * spec.compile_secs.get(msg["source"], 0.0)
            elif "done" in msg:
                proc.wait()
                return nxt
            else:
                _record(summary, spec, msg)
                current, nxt = None, msg["i"] + 1


def _read_line(proc, buf: bytes, deadline: float | None) -> tuple[bytes | None, bytes, bool]:
    """(line, rest, eof): a line from the worker, or None at the deadline, or eof."""
    fd = proc.stdout.fileno()
    while b"\n" not in buf:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            return None, buf, False
        chunk = os.read(fd, 65536)
        if not chunk:
            return None, buf, True
        buf += chunk
    line, _, rest = buf.partition(b"\n")
    return line, rest, False


def _signal(rc: int) -> str:
    if rc < 0:
        try:
            return signal.Signals(-rc).name
        except ValueError:
            return f"signal {-rc}"
    return f"exit status {rc}"


def _tail(err, lines: int = 25) -> str:
    err.seek(0)
    return "\n".join(err.read().decode(errors="replace").splitlines()[-lines:])


def _worker_failed(rc: int, err, start: int) -> int:
    raise RuntimeError(f"worker for iteration {start} failed before its first iteration "
                       f"({_signal(rc)}):\n{_tail(err)}")


def _record(summary: Summary, spec: Spec, rec: dict) -> None:
    summary.iterations += 1
    summary.per_source[(rec["source"], rec["mode"])] += 1
    summary.max_rss = max(summary.max_rss, rec["rss1"])
    summary.slowest = max(summary.slowest, (rec["secs"], rec["i"]))
    if rec["outcome"] == "finding":
        _finding(summary, spec, rec)
        return
    summary.outcomes[rec["outcome"]] += 1
    if rec.get("vm_failed"):
        summary.vm_failures[(rec["mode"], rec["vm_failed"])] += 1
    if rec["mode"] == "mutant":
        loaded = rec["outcome"] not in ("ModuleLoadError", "MissingImportError")
        summary.mutants_loaded[(rec["source"], loaded)] += 1
    if rec["rss1"] - rec["rss0"] > spec.rss_mb:
        _finding(summary, spec, {**rec, "outcome": "finding", "kind": "rss growth",
                                 "message": f"RSS {rec['rss0']} -> {rec['rss1']} MiB in one iteration"})


def _finding(summary: Summary, spec: Spec, rec: dict) -> None:
    """Count it, and write its reproducer (regenerated from (seed, i): the worker may be dead)."""
    import drive
    summary.outcomes["FINDING " + rec["kind"]] += 1
    seeds, _, originals, pool = load_context(spec)
    it = drive.make_iteration(spec.seed, rec["i"], seeds, originals, pool, spec.modes, spec.types)
    if "source" not in rec:  # the worker died or hung: the iteration was never recorded
        summary.iterations += 1
        summary.per_source[(it.source, it.mode)] += 1
    rec.update(source=it.source, mode=it.mode, mutators=it.mutators)
    FINDINGS_DIR.mkdir(exist_ok=True)
    stem = FINDINGS_DIR / f"seed{spec.seed}-i{rec['i']}-{it.source.replace(':', '_')}"
    if it.wasm is not None:
        stem.with_suffix(".wasm").write_bytes(it.wasm)
        rec["reproducer"] = str(stem.with_suffix(".wasm"))
    else:
        stem.with_suffix(".ops.txt").write_text(_describe_ops(it.ops, limit=None))
        rec["reproducer"] = str(stem.with_suffix(".ops.txt"))
    rec["replay"] = f"python fuzz/run.py --seed {spec.seed} --replay {rec['i']}" + _mode_flags(spec)
    summary.findings.append(rec)


def _mode_flags(spec: Spec) -> str:
    flags = "" if len(spec.modes) == 2 else f" --modes {spec.modes[0]}"
    flags += "" if spec.types else " --no-types"
    fams = sorted({d["name"].split(":")[0] for d in spec.seeds})
    return flags + f" --sources {','.join(fams)}"


def _describe_ops(ops, limit: int | None = 300) -> str:
    lines = []
    for op, kw in ops:
        text = f"{op}({', '.join(f'{k}={v!r}' for k, v in kw.items())})"
        lines.append(text if limit is None or len(text) <= limit else text[:limit] + f"... ({len(text)} chars)")
    return "\n".join(lines)


# -- set-up and report -------------------------------------------------------------------------

def prepare(families: set[str], work: Path, cache: str) -> tuple[list, dict[str, str], dict[str, float]]:
    """Build the seeds (in the user's build caches), then compile them once into the private
    compile cache, so that each worker starts in milliseconds instead of recompiling Go."""
    import sources
    seeds, skipped = sources.collect(work / "seeds", families)
    old = os.environ.get("PROXYWASM_CACHE_DIR")
    os.environ["PROXYWASM_CACHE_DIR"] = cache
    try:
        from proxywasm_host import load_module
        compile_secs = {}
        for s in seeds:
            t0 = time.monotonic()
            load_module(s.path)
            compile_secs[s.name] = round(time.monotonic() - t0, 2)
    finally:
        _restore_env(old)
    return seeds, skipped, compile_secs


def run_campaign(seed: int = 0, iterations: int | None = None, seconds: float | None = None,
                 families: set[str] | tuple[str, ...] = FAMILIES, modes: tuple[str, ...] = ("mutant", "hostile"),
                 types: bool = True, batch: int = 50, timeout: float = 10.0, rss_mb: int = 512,
                 progress=None) -> Summary:
    """The campaign as a function (tests/test_fuzz_short.py calls it)."""
    t0 = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="proxywasm-fuzz-"))
    env = dict(os.environ, PROXYWASM_CACHE_DIR=str(work / "cache"), PYTHONFAULTHANDLER="1")
    (work / "cache").mkdir()
    try:
        seeds, skipped, compile_secs = prepare(set(families), work, env["PROXYWASM_CACHE_DIR"])
        spec = Spec(seed, [dataclasses.asdict(s) for s in seeds], modes, types, timeout, compile_secs, rss_mb)
        summary = Summary(seed, skipped=skipped)
        until = time.time() + seconds if seconds else float("inf")
        total = iterations if iterations is not None else 10**9
        i = 0
        while i < total and time.time() < until:
            i = run_batch(spec, i, min(i + batch, total), until, env, summary)
            if progress:
                progress(summary)
        summary.seconds = round(time.monotonic() - t0, 1)
        return summary
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _restore_env(old: str | None) -> None:
    if old is None:
        os.environ.pop("PROXYWASM_CACHE_DIR", None)
    else:
        os.environ["PROXYWASM_CACHE_DIR"] = old


def report(s: Summary) -> str:
    out = [(f"fuzz campaign seed={s.seed}: {s.iterations} iterations in {s.seconds} s, "
            f"max worker RSS {s.max_rss} MiB, slowest iteration {s.slowest[1]} ({s.slowest[0]} s)")]
    for name, why in s.skipped.items():
        out.append(f"  skipped {name}: {why.splitlines()[0] if why else ''}")
    out.append("iterations per source:")
    sources_ = sorted({src for src, _ in s.per_source})
    for src in sources_:
        out.append(f"  {src:22} mutants {s.per_source[(src, 'mutant')]:5} ({s.mutants_loaded[(src, True)]:4} past "
                   f"load_module)   hostile inputs {s.per_source[(src, 'hostile')]:5}")
    out.append("outcomes:")
    for cls, n in sorted(s.outcomes.items(), key=lambda kv: (-kv[1], kv[0])):
        out.append(f"  {cls:32} {n}")
    out.append("guest VMs that failed during an iteration (raise_on_trap=False: Envoy's outcome, no exception):")
    for (mode, kind), n in sorted(s.vm_failures.items()):
        out.append(f"  {mode:8} {kind:23} {n}")
    groups = group_findings(s.findings)
    out.append(f"findings: {len(s.findings)} in {len(groups)} kinds")
    for same in groups:
        f = same[0]
        others = ", ".join(str(g["i"]) for g in same[1:9]) + (" ..." if len(same) > 9 else "")
        out.append(f"- iteration {f['i']} [{f['source']} {f['mode']} {' '.join(f.get('mutators') or [])}] "
                   f"{f['kind']}{' in ' + f['step'] if f.get('step') else ''}: {f['message'][:300]}")
        if f.get("frames"):
            out.append("    " + f["frames"].strip().replace("\n", "\n    "))
        out.append(f"    reproducer: {f['reproducer']}\n    replay: {f['replay']}")
        if others:
            out.append(f"    also iterations {others}")
    return "\n".join(out)


def group_findings(findings: list[dict]) -> list[list[dict]]:
    """Findings with the same kind and innermost frame are one bug: listed once, with the
    other iterations that hit it."""
    groups: dict[tuple, list[dict]] = {}
    for f in findings:
        where = (f.get("frames") or "").strip().splitlines()[-2:-1] or [f["message"][:60]]
        groups.setdefault((f["kind"], where[0].strip()), []).append(f)
    return list(groups.values())


def replay(spec_args, index: int) -> int:
    """Run one iteration here, without catching anything: the traceback is the report."""
    import drive
    import sources
    work = Path(tempfile.mkdtemp(prefix="proxywasm-fuzz-replay-"))
    seeds, _ = sources.collect(work / "seeds", spec_args.families)
    os.environ["PROXYWASM_CACHE_DIR"] = str(work / "cache")  # mutants stay out of the user's cache
    spec = Spec(spec_args.seed, [dataclasses.asdict(s) for s in seeds], spec_args.modes, spec_args.types)
    seeds, by_name, originals, pool = load_context(spec)
    it = drive.make_iteration(spec.seed, index, seeds, originals, pool, spec.modes, spec.types)
    print(f"iteration {index}: {it.source} {it.mode} {' '.join(it.mutators)}")
    if it.ops:
        print(_describe_ops(it.ops))
    try:
        out = drive.run_iteration(it, by_name)
    except drive.Finding as f:
        print(f"FINDING in {f.step}:")
        raise f.exc from None
    print("outcomes:", ", ".join(out.classes) or out.label())
    return 0


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=0)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--iterations", type=int)
    g.add_argument("--seconds", type=float)
    p.add_argument("--sources", default=",".join(FAMILIES), help=f"families, comma-separated: {','.join(FAMILIES)}")
    p.add_argument("--modes", default="mutant,hostile", help="mutant, hostile or both")
    p.add_argument("--no-types", dest="types", action="store_false", help="no wrong-typed hostile values")
    p.add_argument("--batch", type=int, default=50, help="iterations per worker process")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per iteration before it is a hang")
    p.add_argument("--rss-mb", type=int, default=512, help="RSS growth in one iteration that is a finding")
    p.add_argument("--replay", type=int, help="run this one iteration in-process and show its traceback")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--start", type=int, help=argparse.SUPPRESS)
    p.add_argument("--stop", type=int, help=argparse.SUPPRESS)
    p.add_argument("--until", type=float, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    a.families = set(a.sources.split(",")) - {""}
    a.modes = tuple(m for m in ("mutant", "hostile") if m in a.modes.split(","))
    return a


def main(argv: list[str]) -> int:
    a = parse_args(argv)
    if a.worker:
        worker(Spec(**json.loads(Path(a.worker).read_text())), a.start, a.stop, a.until)
        return 0
    if a.replay is not None:
        return replay(a, a.replay)
    if a.iterations is None and a.seconds is None:
        a.iterations = 200
    summary = run_campaign(a.seed, a.iterations, a.seconds, a.families, a.modes, a.types, a.batch, a.timeout,
                           a.rss_mb, progress=lambda s: print(f"  ... {s.iterations} iterations, "
                                                              f"{len(s.findings)} findings", flush=True))
    print(report(summary))
    return 1 if summary.findings else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
