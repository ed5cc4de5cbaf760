"""Run the benchmarks, print a table, write bench/results/latest.json (an output of the run,
not a tracked file: the reference run is kept in docs/bench/).

    .venv/bin/python bench/run.py            # the full run on moto: about 40 min on 2 cores (LocalStack: 30; the soak alone is 10)
    .venv/bin/python bench/run.py --quick    # the same code, shorter (~3 min)
    .venv/bin/python bench/run.py --db-name bench_mine   # name the run's database
    .venv/bin/python bench/run.py --only relay_vs_boto3,e2e_latency
    .venv/bin/python bench/run.py --emulator both   # moto, then LocalStack (each in its own process)
    .venv/bin/python bench/run.py --profile   # also where the time goes: bench/results/profiles/ (py-spy)

Each figure is a ratio against a baseline measured in the same run (docs/PERFORMANCE.md).
Needs PostgreSQL at 127.0.0.1:5432 (user postgres) and Redis at 127.0.0.1:6379; a fresh
database and an emulator (moto_server, or LocalStack: `python -m devtools.emulators install`) on a
free port are made for the run and removed after it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from contextlib import nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common, profiling  # noqa: E402

ORDER = [
    "relay_vs_boto3",
    "relay_vs_seed",
    "relay_null_publisher",
    "e2e_latency",
    "write_overhead",
    "due_query_scale",
    "consumer_vs_boto3",
    "e2e_throughput",
    "consumer_scaling",
    "soak",
    "cutover_pause",
]


def benchmarks():
    from bench import consumer_bench, cutover_bench, db_bench, e2e_bench, pipeline_bench, relay_bench

    return {
        "relay_vs_boto3": relay_bench.relay_vs_boto3,
        "relay_vs_seed": relay_bench.relay_vs_seed,
        "relay_null_publisher": relay_bench.relay_null_publisher,
        "e2e_latency": e2e_bench.e2e_latency,
        "write_overhead": db_bench.write_overhead,
        "due_query_scale": db_bench.due_query_scale,
        "consumer_vs_boto3": consumer_bench.consumer_vs_boto3,
        "e2e_throughput": pipeline_bench.e2e_throughput,
        "consumer_scaling": pipeline_bench.consumer_scaling,
        "soak": pipeline_bench.soak,
        "cutover_pause": cutover_bench.cutover_pause,
    }


def fmt(x: float) -> str:
    if x != x:  # nan
        return "-"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def table(results: list[common.Result]) -> str:
    head = ("benchmark", "unit", "value", "baseline", "ratio", "target", "met", "load")
    rows = [
        (
            r.name,
            r.unit,
            fmt(r.value),
            fmt(r.baseline),
            fmt(r.ratio),
            r.target,
            {True: "yes", False: "NO", None: "-"}[r.met],
            "/".join(f"{x:.1f}" for x in r.extra.get("loadavg_after", ())) or "-",
        )
        for r in results
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=True)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"  # noqa: E731
    return "\n".join([line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short run of the same code")
    parser.add_argument(
        "--only", action="append", help=f"a subset of: {', '.join(ORDER)} (comma-separated, or --only again)"
    )
    parser.add_argument("--output", default=str(common.RESULTS / "latest.json"))
    parser.add_argument(
        "--db-name",
        help="the PostgreSQL database the run creates and drops at the end (default bench_<random>; must not exist)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample each benchmark and its processes with py-spy: bench/results/profiles/<benchmark>-<emulator>.txt",
    )
    parser.add_argument(
        "--emulator",
        choices=("moto", "localstack", "both"),
        default="moto",
        help="the SNS/SQS emulator to measure against; both = one run each, in separate processes",
    )
    args = parser.parse_args(argv)
    if args.profile and profiling.available() is None:
        parser.error("--profile needs py-spy: .venv/bin/pip install -r requirements-dev.txt")
    if args.emulator == "both":
        return run_both(args)
    names = [n for arg in args.only for n in arg.split(",") if n] if args.only else ORDER
    unknown = set(names) - set(ORDER)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")

    started = time.monotonic()
    results: list[common.Result] = []
    failed: list[str] = []
    try:
        try:
            e = common.configure(args.emulator, db_name=args.db_name)
        except common.BenchSetupError as exc:
            parser.error(str(exc))
        print(f"database {e.db_name}, {e.emulator} {e.endpoint}, celery queue {e.queue}", flush=True)
        funcs = benchmarks()
        try:
            warm_up(e.emulator)
        except Exception:  # the first figure will be cold; say so and measure anyway
            traceback.print_exc()
            print("   warm-up failed: the first figure may be measured on a cold emulator", flush=True)
        for name in names:
            t0 = time.monotonic()
            load_before = os.getloadavg()
            print(
                f"-- {name} ... (load average {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f})",
                flush=True,
            )
            try:
                if cleared := common.clean_slate():
                    print(f"   cleared the last benchmark's backlog: {cleared}", flush=True)
                with (
                    profiling.Sampler(f"{name}-{e.emulator}", common.RESULTS / "profiles")
                    if args.profile
                    else nullcontext()
                ):
                    out = funcs[name](args.quick)
            except Exception:
                traceback.print_exc()
                failed.append(name)
                continue
            out = out if isinstance(out, list) else [out]
            # The machine is shared: each figure carries the load average around it, and the
            # cores it had.
            for r in out:
                r.extra.update(
                    loadavg_before=list(load_before), loadavg_after=list(os.getloadavg()), cores=os.cpu_count()
                )
            results.extend(out)
            write(args, results, partial=True)  # a run stopped later keeps what it measured
            for r in out:
                print(
                    f"   {r.name}: {fmt(r.value)} {r.unit} vs {fmt(r.baseline)} -> ratio {fmt(r.ratio)} ({time.monotonic() - t0:.0f} s)",
                    flush=True,
                )
    finally:
        common.teardown()
    elapsed = time.monotonic() - started
    print(f"\non {args.emulator}:")
    print(table(results))
    print(f"\n{'quick' if args.quick else 'full'} run in {elapsed:.0f} s on {platform.python_version()}")
    out = write(args, results, partial=False)
    print(f"wrote {out}")
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def warm_up(emulator: str) -> None:
    """One round before the emulator's first figure (relay_bench.warm_up), not measured."""
    from bench import relay_bench

    print(f"-- warm-up on {emulator} ...", flush=True)
    seconds = relay_bench.warm_up()
    print(f"   warm-up done in {seconds:.1f} s (not measured)", flush=True)


def write(args: argparse.Namespace, results: list[common.Result], *, partial: bool) -> Path:
    """The JSON output; ``partial`` rows are written after each benchmark of a run under way."""
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = [r.as_dict() | {"quick": args.quick, "emulator": args.emulator, "partial": partial} for r in results]
    out.write_text(json.dumps(payload, indent=2) + "\n")
    return out


def run_both(args: argparse.Namespace) -> int:
    """One run per emulator, each in a process of its own (Django is configured once per
    process), then one file with both: rows carry their ``emulator``."""
    import subprocess

    base = (["--quick"] if args.quick else []) + (["--only", ",".join(args.only)] if args.only else [])
    base += ["--profile"] if args.profile else []
    if args.db_name:  # one database per emulator run
        base += ["--db-name", f"{args.db_name}_{{emulator}}"]
    out = Path(args.output)
    rows: list[dict] = []
    code = 0
    for emulator in ("moto", "localstack"):
        part = out.with_name(f"{out.stem}-{emulator}.json")
        print(f"\n==== {emulator} ====", flush=True)
        argv = [a.replace("{emulator}", emulator) for a in base]
        done = subprocess.run([sys.executable, __file__, *argv, "--emulator", emulator, "--output", str(part)])
        code = code or done.returncode
        if part.exists():
            rows += json.loads(part.read_text())
    out.write_text(json.dumps(rows, indent=2) + "\n")
    # Reported apart: each emulator's rows in a table of their own (moto's end-to-end rows
    # run at a lower rate than LocalStack's: bench/e2e_bench.py).
    fields = set(common.Result.__dataclass_fields__)
    for emulator in ("moto", "localstack"):
        mine = [common.Result(**{k: v for k, v in r.items() if k in fields}) for r in rows if r["emulator"] == emulator]
        if mine:
            print(f"\non {emulator}:")
            print(table(mine))
    print(f"\nwrote {out} ({len(rows)} rows, both emulators)")
    return code


if __name__ == "__main__":
    sys.exit(main())
