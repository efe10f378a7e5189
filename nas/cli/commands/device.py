"""`shufflenas device serve|info`: run the latency agent on a board, or ask one what it is."""

from __future__ import annotations

import argparse
import json

from nas.cli.args import UserError, positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "device",
        help="device agent: serve latency measurements on a board, or query one",
        description="Run the device agent (needs only numpy and onnxruntime) or query a running agent.",
    )
    dsub = p.add_subparsers(dest="device_command", metavar="SUBCOMMAND", parser_class=type(p))
    s = dsub.add_parser("serve", help="serve ONNX latency measurements over HTTP on this machine")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; 0.0.0.0 for the LAN)")
    s.add_argument("--port", type=int, default=8765, help="TCP port (default 8765)")
    s.add_argument("--token-file", default=None, help="file holding the shared token (required off loopback)")
    s.add_argument("--max-bytes", type=int, default=None, help="largest accepted ONNX upload in bytes")
    s.set_defaults(func=run_serve)
    i = dsub.add_parser("info", help="print a device agent's /v1/info (machine, CPU, fingerprint, runtime)")
    i.add_argument("url", metavar="URL", help="e.g. http://192.168.1.20:8765")
    i.add_argument("--token-file", default=None, help="file holding the agent's token")
    i.add_argument("--timeout", type=float, default=10.0, help="seconds per request (default 10)")
    i.add_argument("--retries", type=int, default=2, help="retries on connection errors (default 2)")
    i.set_defaults(func=run_info)
    p.set_defaults(func=_missing_subcommand)


def _missing_subcommand(args: argparse.Namespace) -> int:
    raise UserError("missing subcommand: use `shufflenas device serve` or `shufflenas device info URL`")


def _token(path: str | None) -> str | None:
    if path is None:
        return None
    from objectives.latency.remote_backend import read_token_file

    try:
        return read_token_file(path)
    except ValueError as e:
        raise UserError(f"argument --token-file: {e}") from None


def run_serve(args: argparse.Namespace) -> int:
    positive_int("--port", args.port, 0, 65535)
    if args.max_bytes is not None:
        positive_int("--max-bytes", args.max_bytes, 1024)
    token = _token(args.token_file)
    from objectives.latency import agent

    if token is None and not agent.is_loopback(args.host):
        raise UserError(f"argument --token-file: serving on {args.host} (not loopback) needs a token file")

    try:
        if args.max_bytes is None:
            agent.serve(args.host, args.port, token)
        else:
            agent.serve(args.host, args.port, token, args.max_bytes)
    except ValueError as e:
        raise UserError(str(e)) from None
    except OSError as e:
        raise UserError(f"cannot serve on {args.host}:{args.port} ({e.strerror or e})") from None
    return 0


def run_info(args: argparse.Namespace) -> int:
    if not args.url.startswith(("http://", "https://")):
        raise UserError(f"argument URL: must start with http:// or https://, got {args.url!r}")
    if args.timeout <= 0:
        raise UserError(f"argument --timeout: must be > 0 seconds, got {args.timeout}")
    positive_int("--retries", args.retries, 0, 20)
    token = _token(args.token_file)
    from objectives.latency.remote import DeviceRejected, DeviceUnreachable, RemoteDevice

    dev = RemoteDevice(args.url, token=token, timeout=args.timeout, retries=args.retries, backoff=0.5)
    try:
        info = dev.info()
    except DeviceRejected as e:
        raise UserError(str(e)) from None
    except DeviceUnreachable as e:
        raise SystemExit(f"shufflenas device: error: {e}") from None
    print(json.dumps(info, indent=2, sort_keys=True))
    return 0
