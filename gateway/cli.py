"""``pmc-gateway``: serve, demo, sim, check-config, triage, bench (SPEC §2).

Bad flags or config exit 2 with a one-line reason; no command prints a traceback for
bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from gateway.errors import ConfigError

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text!r}")
    return value


def _rate(text: str) -> float:
    value = _positive_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be a fraction in [0, 1]: {text!r}")
    return value


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) < 65536:
        raise argparse.ArgumentTypeError(f"not a port: {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pmc-gateway", description="Reliability gateway for the PinmyCal API.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", required=True, metavar="PATH", help="TOML config file")

    demo = commands.add_parser(
        "demo", help="simulator + gateway (memory store) + light synthetic traffic"
    )
    demo.add_argument("--port", type=_port, default=8080, help="gateway port (default 8080; 0 = any free)")
    demo.add_argument("--sim-port", type=_port, default=0, help="simulator port (default: any free)")
    demo.add_argument("--no-traffic", action="store_true", help="do not send synthetic traffic")
    demo.add_argument("--duration-s", type=_positive_float, default=0, help="stop after this long (0 = until Ctrl-C)")

    sim = commands.add_parser("sim", help="the PinmyCal API simulator alone")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=_port, default=8099)
    sim.add_argument("--latency-ms", type=_positive_float, default=180, help="mean latency (long-tailed)")
    sim.add_argument("--error-rate", type=_rate, default=0.0, help="fraction of 5xx answers")
    sim.add_argument("--timeout-rate", type=_rate, default=0.0, help="fraction of requests that hang")
    sim.add_argument("--slow-rate", type=_rate, default=0.0, help="fraction of slow answers (10x latency)")
    sim.add_argument("--extra-latency-ms", type=_positive_float, default=0.0, help="added to every answer")
    sim.add_argument("--storm-s", type=_positive_float, default=0.0, help="answer 429 to everything for this long")
    sim.add_argument("--rate-limit", type=int, default=120, help="requests per minute per key (default 120; 0 = no limit)")
    sim.add_argument("--job-eta-s", type=_positive_float, default=15.0, help="how long a 202 job takes (its eta)")
    sim.add_argument("--job-fail-rate", type=_rate, default=0.0, help="fraction of jobs that end failed")
    sim.add_argument("--job-slow-rate", type=_rate, default=0.0, help="fraction of jobs that take three times their eta")
    sim.add_argument("--rate-limit-headers", action="store_true", help="send RateLimit-Limit/-Remaining/-Reset on every answer")
    sim.add_argument("--outside-per-minute", type=_positive_float, default=0.0, help="another caller outside the gateway spends this much of every key")
    sim.add_argument("--outside-bookings-per-minute", type=_positive_float, default=0.0, help="bookings made on PinmyCal directly (a free slot of a day lately asked about), each announced by webhook")
    sim.add_argument("--no-record", action="store_true", help="do not keep the /_sim/requests log (benchmarks)")
    sim.add_argument("--expired-key", action="append", default=[], metavar="KEY", help="a key to answer 401 INVALID_TOKEN")
    sim.add_argument("--webhook-url", default="", help="where to send signed booking webhooks")
    sim.add_argument("--webhook-secret-env", default="PMC_WEBHOOK_SECRET", help="variable holding the signing secret")
    sim.add_argument("--seed", type=int, default=None, help="seed for latency and fault randomness")

    check = commands.add_parser("check-config", help="validate a config file and its secrets")
    check.add_argument("path", metavar="PATH")

    triage = commands.add_parser("triage", help="print what happened to one request")
    triage.add_argument("request_id", metavar="REQUEST_ID")
    triage.add_argument("--url", default="http://127.0.0.1:8080", help="gateway base URL")
    triage.add_argument("--token", default=None, help="admin token (default: $PMC_GATEWAY_ADMIN_TOKEN)")
    triage.add_argument("--json", action="store_true", help="print the raw record")
    bench = commands.add_parser("bench", help="measure the gateway's overhead against direct calls and a bare aiohttp proxy")
    bench.add_argument("--requests", type=int, default=20_000, help="requests per target per repetition (throughput)")
    bench.add_argument("--connections", type=int, default=16)
    bench.add_argument("--repetitions", type=int, default=3, help="interleaved repetitions; medians and min–max are reported")
    bench.add_argument("--latency-requests", type=int, default=6_000, help="requests per run with the simulator at a fixed 20 ms")
    bench.add_argument("--memory-requests", type=int, default=200_000, help="requests with distinct ids for the memory check")
    bench.add_argument("--redis", default=None, metavar="URL", help="use this Redis (default: start a private redis-server if installed)")
    bench.add_argument("--quick", action="store_true", help="a short run (a smoke test, not a measurement)")
    bench.add_argument("--json", action="store_true", help="machine-readable output")
    bench.add_argument("--scenarios", action="store_true", help="the rate-budget scenarios instead: direct vs two replicas on one Redis (bench/README.md)")
    bench.add_argument("--latency-ms", type=_positive_float, default=50, help="with --scenarios: the simulator's mean latency")
    bench.add_argument("--max-wait-ms", type=int, default=1000, help="with --scenarios: the gateways' budget.max_wait_ms")
    return parser


def _check_config(path: str) -> int:
    from gateway import settings

    try:
        problems, warnings = settings.check(path, os.environ)
    except ConfigError as exc:
        problems, warnings = exc.problems, []
    for problem in problems:
        print(problem, file=sys.stderr)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if problems:
        return EXIT_USAGE
    print(f"{path}: ok")
    return 0


def _serve(path: str) -> int:
    from gateway import settings
    from gateway.observability import log
    from gateway.serve import serve

    log.configure()
    try:
        loaded = settings.load(path)
        settings.resolve_secrets(loaded, os.environ)
    except ConfigError as exc:
        print(f"pmc-gateway: bad config: {'; '.join(exc.problems)}", file=sys.stderr)
        return EXIT_USAGE
    return serve(loaded, lambda: settings.resolve_secrets(loaded, os.environ), config_path=Path(path).resolve())


def _triage(args: argparse.Namespace) -> int:
    import urllib.error
    import urllib.parse
    import urllib.request

    from gateway.admin.triage import render

    token = args.token or os.environ.get("PMC_GATEWAY_ADMIN_TOKEN")
    if not token:
        print("pmc-gateway: error: no admin token (use --token or PMC_GATEWAY_ADMIN_TOKEN)", file=sys.stderr)
        return EXIT_USAGE
    url = f"{args.url.rstrip('/')}/_gateway/requests/{urllib.parse.quote(args.request_id, safe='')}"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            record = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        try:
            detail = json.loads(detail).get("message", detail)
        except (ValueError, AttributeError):
            pass
        print(f"pmc-gateway: {exc.code}: {detail}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"pmc-gateway: cannot reach {args.url}: {getattr(exc, 'reason', exc)}", file=sys.stderr)
        return 1
    print(json.dumps(record, indent=2) if args.json else render(record))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "check-config":
            return _check_config(args.path)
        if args.command == "serve":
            return _serve(args.config)
        if args.command == "triage":
            return _triage(args)
        if args.command == "sim":
            from gateway.tools.sim.server import run_from_args

            return run_from_args(args)
        if args.command == "bench" and args.scenarios:
            from gateway.tools.bench.scenarios import run_from_args as run_scenarios

            return run_scenarios(args)
        if args.command == "bench":
            from gateway.tools.bench.runner import run_from_args as run_bench

            return run_bench(args)
        if args.command == "demo":
            from gateway.tools.demo import run_demo

            return run_demo(args)
    except KeyboardInterrupt:
        return 0
    except ConfigError as exc:
        print(f"pmc-gateway: bad config: {'; '.join(exc.problems)}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # e.g. the port is taken
        print(f"pmc-gateway: error: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
