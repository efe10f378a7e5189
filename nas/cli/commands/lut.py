"""`shufflenas lut build|validate`: a latency predictor from profiled whole networks of a space."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from nas.cli.args import UserError, parse_input, positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "lut",
        help="latency predictor: build one for a space on a device, validate it",
        description="Profile whole networks of a space on a device with ONNX Runtime's profiler (the fused "
        "kernels that really run), then predict any architecture of the space from per-kernel times "
        "(a kernel seen while building: its median; unseen: a regression per kernel type), calibrated "
        "against unprofiled whole-network medians. The file is tied to the device and runtime version.",
    )
    lsub = p.add_subparsers(dest="lut_command", metavar="SUBCOMMAND", parser_class=type(p))
    b = lsub.add_parser("build", help="profile networks of a space (adaptively chosen) and write the predictor")
    b.add_argument("--device", default="local", help="'local' (ONNX Runtime here) or a device agent URL")
    b.add_argument("--token-file", default=None, help="device agent token file (remote)")
    b.add_argument("--space-file", default=None, help="JSON file with the space bounds (or {'space': {...}})")
    b.add_argument("--family", default=None,
                   help="architecture family, e.g. resnext (default: the space file's 'name', else the default)")
    b.add_argument("--groups", default=None, help="comma list, e.g. 3,8")
    b.add_argument("--widths", default=None, help="comma list, e.g. 0.5,1.0")
    b.add_argument("--kernels", default=None, help="comma list, e.g. 3,5")
    b.add_argument("--placements", default=None, help="comma list of shuffle placements, e.g. before_dw,after_dw")
    b.add_argument("--ratios", default=None, help="comma list of bottleneck ratios, e.g. 0.25")
    b.add_argument("--repeats", default=None, help="per-stage ranges, e.g. 2-6,4-10,2-6")
    b.add_argument("--per-stage-groups", action="store_true", help="groups chosen per stage")
    b.add_argument("--input", default="3x224x224", help="deploy input CxHxW (default 3x224x224)")
    b.add_argument("--classes", type=int, default=None, help="number of classes (default: the space's)")
    b.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    b.add_argument("--archs", type=int, default=150,
                   help="networks to profile, i.e. measurements on the target (default 150, at most 1500)")
    b.add_argument("--initial", type=int, default=None, help="random networks before adaptive sampling "
                   "(default a third of --archs)")
    b.add_argument("--batch", type=int, default=10, help="networks chosen per adaptive round (default 10)")
    b.add_argument("--profile-runs", type=int, default=10, help="profiled runs per network (default 10)")
    b.add_argument("--min-time", type=float, default=0.3, help="minimum timed seconds per network (default 0.3)")
    b.add_argument("--repeats-min", type=int, default=10, help="minimum timed runs per network (default 10)")
    b.add_argument("--clock", default="wall", choices=("wall", "cpu"), help="local timing clock (default wall)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--count", action="store_true", help="only print the space's distinct part counts; measure nothing")
    b.add_argument("--out", default=None, help="output predictor JSON (required unless --count)")
    b.add_argument("--json", action="store_true", help="print a JSON summary")
    b.set_defaults(func=run_build)
    v = lsub.add_parser("validate", help="measure N random archs; compare the predictor and a MACs-proportional model")
    v.add_argument("table", metavar="PREDICTOR")
    v.add_argument("--n", type=int, default=20, help="random archs to measure (default 20)")
    v.add_argument("--seed", type=int, default=12345)
    v.add_argument("--device", default=None, help="agent URL for a remote predictor (default: the file's)")
    v.add_argument("--token-file", default=None, help="device agent token file (remote)")
    v.add_argument("--min-time", type=float, default=0.5, help="minimum timed seconds per arch (default 0.5)")
    v.add_argument("--json", action="store_true", help="print the figures as JSON")
    v.set_defaults(func=run_validate)
    p.set_defaults(func=_missing)


def _missing(args: argparse.Namespace) -> int:
    raise UserError("missing subcommand: use `shufflenas lut build ...` or `shufflenas lut validate TABLE`")


def _list(arg: str, text: str, kind: type) -> list[Any]:
    try:
        values = [kind(v.strip()) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"argument {arg}: expected a comma list of {kind.__name__}, got {text!r}") from None
    if not values:
        raise UserError(f"argument {arg}: empty list")
    return values


def space_from_args(args: argparse.Namespace) -> Any:
    from search_spaces import get_space
    from search_spaces.registry import DEFAULT_FAMILY

    bounds: dict[str, Any] = {}
    name = DEFAULT_FAMILY
    if args.space_file:
        try:
            with open(args.space_file, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            raise UserError(f"argument --space-file: no such file {args.space_file!r}") from None
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UserError(f"{args.space_file}: cannot read a JSON object ({e})") from None
        if isinstance(data, dict) and isinstance(data.get("space"), dict):
            data = data["space"]
        if not isinstance(data, dict):
            raise UserError(f"{args.space_file}: expected a JSON object of space bounds")
        data = dict(data)
        name = data.pop("name", name)
        bounds.update(data)
    if args.family:
        name = args.family
    if args.groups:
        bounds["groups"] = _list("--groups", args.groups, int)
    if args.widths:
        bounds["widths"] = _list("--widths", args.widths, float)
    if args.kernels:
        bounds["kernels"] = _list("--kernels", args.kernels, int)
    if args.placements:
        bounds["placements"] = _list("--placements", args.placements, str)
    if args.ratios:
        bounds["bottleneck_ratios"] = _list("--ratios", args.ratios, float)
    if args.repeats:
        rr = []
        for part in args.repeats.split(","):
            lo, _, hi = part.partition("-")
            try:
                rr.append((int(lo), int(hi or lo)))
            except ValueError:
                raise UserError(f"argument --repeats: expected ranges like 2-6,4-10,2-6, got {args.repeats!r}") from None
        bounds["repeats"] = rr
    if args.per_stage_groups:
        bounds["per_stage_groups"] = True
    try:
        return get_space(name, **bounds)
    except ValueError as e:
        if "unknown family" in str(e):
            raise UserError(f"argument --family: {e}") from None
        raise UserError(f"{args.space_file or 'space'}: {e}") from None
    except TypeError as e:  # a knob the family does not have (e.g. --groups for resnext)
        raise UserError(f"{args.space_file or 'space'}: family {name!r} has no such bound ({e})") from None


def _backend(device: str, token_file: str | None, threads: int, config: Any) -> Any:
    from objectives.latency.api import get_backend

    try:
        if device == "local":
            return get_backend("onnxruntime", threads=threads, config=config)
        return get_backend("remote", url=device, token_file=token_file, threads=threads, config=config)
    except ValueError as e:
        if "clock" in str(e):
            raise UserError(f"argument --clock: {e}") from None
        raise UserError(f"argument --device/--token-file: {e}") from None


def run_build(args: argparse.Namespace) -> int:
    from objectives.latency.base import MeasureConfig
    from objectives.latency.predictor import build_predictor, enumerate_parts

    space = space_from_args(args)
    shape = parse_input(args.input)
    classes = positive_int("--classes", args.classes) if args.classes is not None else None
    threads = positive_int("--threads", args.threads, 1, 256)
    archs = positive_int("--archs", args.archs, 2, 1500)
    if args.initial is not None:
        positive_int("--initial", args.initial, 2, archs)
    batch = positive_int("--batch", args.batch, 1)
    runs = positive_int("--profile-runs", args.profile_runs, 1, 100)
    if args.count:
        parts = enumerate_parts(space, shape, classes)
        kinds = {k: sum(p.kind == k for p in parts) for k in ("stem", "unit", "head")}
        counts = f"{len(parts)} distinct parts ({kinds['stem']} stem, {kinds['unit']} unit, {kinds['head']} head)"
        print(json.dumps({"parts": len(parts), **kinds}) if args.json else counts)
        return 0
    if not args.out:
        raise UserError("argument --out: required (the predictor JSON to write)")
    if args.min_time < 0 or args.min_time > 60:
        raise UserError(f"argument --min-time: must be in [0, 60], got {args.min_time}")
    config = MeasureConfig(
        warmup=5, min_repeats=positive_int("--repeats-min", args.repeats_min, 3), min_time_s=args.min_time,
        clock=args.clock,
    )
    backend = _backend(args.device, args.token_file, threads, config)
    print(f"profiling {archs} networks at {args.input} on {args.device}", file=sys.stderr)

    def progress(i: int, n: int, why: str) -> None:
        if i == n or i % 10 == 0:
            print(f"  {i}/{n} ({why})", file=sys.stderr)

    from objectives.latency.remote import DeviceRejected, DeviceUnreachable

    try:
        pred = build_predictor(
            space, shape, backend, archs=archs, initial=args.initial, batch=batch, profile_runs=runs,
            classes=classes, seed=args.seed, progress=progress,
            device_url=None if args.device == "local" else args.device,
        )
    except DeviceUnreachable as e:
        raise SystemExit(f"shufflenas lut: error: {e}") from None
    except (DeviceRejected, RuntimeError) as e:  # a wrong token, an agent without profile mode
        raise UserError(f"argument --device: {args.device}: {str(e).splitlines()[0]}") from None
    pred.save(args.out)
    d = pred.data
    summary = {
        "out": args.out, "format": d["format"], "measurements": d["measurements"], "kernels": len(d["kernels"]),
        "device": d["device"], "backend": d["backend"], "input": d["input"], "runtime": d["runtime"],
        "seconds_build": round(d["seconds_build"], 2),
        "calibration": {k: d["calibration"][k] for k in ("a", "b", "c", "n")},
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        cal = summary["calibration"]
        print(f"wrote {args.out}: {d['measurements']} networks profiled, {len(d['kernels'])} distinct kernels, "
              f"{d['seconds_build']:.1f} s; calibration ms = {cal['a']:.3f}*sum + {cal['b']:.3f}*n_kernels/1000 "
              f"+ {cal['c']:.3f}")
    return 0


def load_predictor(path: str) -> Any:
    """The predictor file, or one line saying what is wrong with it (exit 2)."""
    from objectives.latency.predictor import Predictor

    try:
        return Predictor.load(path)
    except ValueError as e:
        raise UserError(str(e)) from None


def run_validate(args: argparse.Namespace) -> int:
    from objectives.latency.base import MeasureConfig
    from objectives.latency.predictor import ForeignDevice, PredictorBackend, validate_predictor

    pred = load_predictor(args.table)
    positive_int("--n", args.n, 3, 10000)
    device = args.device or pred.data.get("device_url") or "local"
    measured = pred.data.get("measure") or {}
    config = MeasureConfig(warmup=5, min_repeats=20, min_time_s=args.min_time, clock=measured.get("clock", "wall"))
    backend = _backend(device, args.token_file, pred.threads, config)
    try:
        pred.check_device(str(backend.device_info()["fingerprint"]), backend.runtime(), device)
        PredictorBackend(pred)  # kernel detection here needs this host (or its runtime version)
    except ForeignDevice as e:
        raise UserError(str(e)) from None

    def progress(i: int, n: int) -> None:
        if i == n or i % 10 == 0:
            print(f"  {i}/{n}", file=sys.stderr)

    res = validate_predictor(pred, backend, n=args.n, seed=args.seed, progress=progress)
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    print(f"{res['n']} random archs of the predictor's space at {'x'.join(map(str, pred.input_shape))} on {device} "
          f"({res['held_out']} not among the {pred.data['measurements']} profiled):")
    for name, label in (("predictor", "predictor (profiled kernels)"), ("macs", "MACs-proportional (same data)")):
        r = res[name]
        print(
            f"  {label:32s} within ±10%: {r['within']:.0%}   Spearman {r['spearman']:.3f}   "
            f"mean |err| {r['mean_abs_rel_err']:.1%}"
        )
    return 0
