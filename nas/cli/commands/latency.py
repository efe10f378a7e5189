"""`shufflenas latency`: median, p90, spread and sample count of one architecture on a backend."""

from __future__ import annotations

import argparse
import json
import sys

from nas.cli.args import UserError, load_arch, parse_input, positive_int

BACKEND_NAMES = ("torch", "onnxruntime", "remote", "predictor", "lut")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "latency",
        help="measure (or predict) the latency of an architecture",
        description="Latency of a preset or arch JSON: local torch / ONNX Runtime, a remote device agent, "
        "or a latency predictor (`shufflenas lut build`). Prints the median, p90, spread and sample count, "
        "and the device.",
    )
    p.add_argument("arch", metavar="PRESET|ARCH.json")
    p.add_argument("--backend", default="onnxruntime",
                   help=f"one of {', '.join(BACKEND_NAMES)} (default onnxruntime; lut is predictor's old name)")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    p.add_argument("--input", default="3x224x224", help="deploy input CxHxW (default 3x224x224)")
    p.add_argument("--classes", type=int, default=None, help="number of classes (default: the arch's)")
    p.add_argument("--device", default=None, metavar="URL", help="device agent URL for --backend remote")
    p.add_argument("--token-file", default=None, help="file holding the device agent's token")
    p.add_argument("--table", default=None, help="predictor JSON for --backend predictor (`shufflenas lut build`)")
    p.add_argument("--cache", default=None, help="SQLite latency cache file (read first, then written)")
    p.add_argument("--min-time", type=float, default=1.0, help="minimum seconds of timed runs (default 1.0)")
    p.add_argument("--repeats", type=int, default=20, help="minimum timed runs (default 20)")
    p.add_argument("--warmup", type=int, default=5, help="warm-up runs (default 5)")
    p.add_argument("--max-spread", type=float, default=0.15, help="re-measure once above this spread (default 0.15)")
    p.add_argument("--clock", default="wall", help="wall (default) or cpu (process CPU time; 1 thread; "
                   "repeatable on a busy host)")
    p.add_argument("--timeout", type=float, default=60.0, help="remote: seconds per request (default 60)")
    p.add_argument("--retries", type=int, default=3, help="remote: retries on connection errors (default 3)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def backend_from_args(args: argparse.Namespace) -> object:
    """Validate the backend options (one line per mistake) and build the backend."""
    from pathlib import Path

    if args.backend not in BACKEND_NAMES:
        raise UserError(f"argument --backend: unknown backend {args.backend!r}; choose from {', '.join(BACKEND_NAMES)}")
    threads = positive_int("--threads", args.threads, 1, 256)
    if args.min_time < 0 or args.min_time > 600:
        raise UserError(f"argument --min-time: must be in [0, 600] seconds, got {args.min_time}")
    positive_int("--repeats", args.repeats, 3)
    positive_int("--warmup", args.warmup, 0)
    if args.clock not in ("wall", "cpu"):
        raise UserError(f"argument --clock: must be wall or cpu, got {args.clock!r}")
    if args.max_spread <= 0:
        raise UserError(f"argument --max-spread: must be > 0, got {args.max_spread}")
    from objectives.latency.api import get_backend
    from objectives.latency.base import MeasureConfig

    config = MeasureConfig(
        warmup=args.warmup, min_repeats=args.repeats, min_time_s=args.min_time, max_spread=args.max_spread,
        clock=args.clock,
    )
    try:
        if args.backend == "remote":
            if not args.device:
                raise UserError("argument --device: --backend remote needs --device http://HOST:PORT")
            if args.token_file is not None and not Path(args.token_file).is_file():
                raise UserError(f"argument --token-file: no such file {args.token_file!r}")
            if args.timeout <= 0:
                raise UserError(f"argument --timeout: must be > 0 seconds, got {args.timeout}")
            positive_int("--retries", args.retries, 0, 20)
            return get_backend(
                "remote", url=args.device, token_file=args.token_file, threads=threads, config=config,
                timeout=args.timeout, retries=args.retries,
            )
        if args.backend in ("predictor", "lut"):
            if not args.table:
                raise UserError(
                    f"argument --table: --backend {args.backend} needs --table FILE.json (from `shufflenas lut build`)"
                )
            return get_backend("predictor", table=args.table)
        return get_backend(args.backend, threads=threads, config=config)
    except ValueError as e:
        raise UserError(str(e)) from None


def run(args: argparse.Namespace) -> int:
    arch = load_arch(args.arch)
    c, h, w = parse_input(args.input)
    classes = positive_int("--classes", args.classes) if args.classes is not None else arch.num_classes
    arch = arch.with_io(in_channels=c, num_classes=classes, small_input=arch.small_input)
    backend = backend_from_args(args)
    from objectives.latency.api import measure_latency

    try:
        from objectives.latency.remote import DeviceUnreachable
    except ImportError:  # the remote client is optional for local backends
        DeviceUnreachable = ConnectionError  # type: ignore[misc,assignment]  # noqa: N806
    import time

    wall0, cpu0 = time.perf_counter(), time.process_time()
    try:
        result = measure_latency(arch, (c, h, w), backend, cache=args.cache)
    except ValueError as e:
        raise UserError(str(e)) from None
    except DeviceUnreachable as e:
        raise SystemExit(f"shufflenas latency: error: {e}") from None
    if args.json:
        print(json.dumps({"arch": args.arch, **result.to_dict()}, indent=2))
        return 0
    print(f"{args.arch} @ {'x'.join(map(str, (c, h, w)))} [{result.arch_id}]")
    kind = "predicted" if result.extra.get("predicted") else "measured"
    print(f"  {kind}: median {result.median_ms:.3f} ms, p90 {result.p90_ms:.3f} ms, spread {result.spread:.1%}, n={result.n}")
    runtime = ", ".join(f"{k} {v}" for k, v in result.runtime.items())
    print(f"  backend {result.backend}, {result.threads} thread(s), {runtime}")
    print(f"  device {result.device_label or result.machine} [fingerprint {result.device}]" + (" (cached)" if result.cached else ""))
    hint = contention_hint(time.perf_counter() - wall0, time.process_time() - cpu0, result, args.clock)
    if hint:
        print(hint, file=sys.stderr)
    return 0


def contention_hint(wall_s: float, cpu_s: float, result: object, clock: str) -> str:
    """A note when a wall-clock measurement on this host got much less CPU than it asked for (a busy
    core inflates wall times: 2x under one competing process, measured), else ""."""
    threads = getattr(result, "threads", 1) or 1
    if clock != "wall" or getattr(result, "cached", False) or getattr(result, "backend", "") not in ("torch",
                                                                                                   "onnxruntime"):
        return ""
    share = cpu_s / max(wall_s * threads, 1e-9)
    if wall_s < 0.2 or share >= 0.8:
        return ""
    return (f"note: the measurement got {share:.0%} of the {threads} core(s) it ran on (wall {wall_s:.1f} s, "
            f"CPU {cpu_s:.1f} s): the host is busy and wall-clock times are inflated; try --clock cpu, or a "
            f"search's drift-aware latency (latency.drift)")
