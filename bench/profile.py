"""Where one gateway's CPU goes under the bench's load: per-thread CPU, and optionally a
py-spy or perf profile of the serving process.

    .venv/bin/python bench/profile.py                      # CPU µs/request, per thread
    .venv/bin/python bench/profile.py --perf /tmp/gw.perf  # + perf record -g (which library, kernel)
    .venv/bin/python bench/profile.py --py-spy /tmp/gw.txt # + py-spy raw stacks (which Python line)
    .venv/bin/python bench/profile.py --env OTEL_SDK_DISABLED=true   # ablate a feature by its env
    .venv/bin/python bench/profile.py --memory-store       # without the Redis round trip
    .venv/bin/python bench/profile.py --hit                # every request a shared-read hit
    .venv/bin/python bench/profile.py --reference bare     # the bare aiohttp proxy (or floor, static) alone
    .venv/bin/python bench/profile.py --hit --ablate no-bookkeeping   # a part switched off (bench/ablate/)
    .venv/bin/python bench/profile.py --ablate lean-hit    # a hit as one flat handler: the lower bound

It uses the bench's own pieces (gateway/tools/bench/runner.py): the simulator at 0 ms, a private
redis-server and OTLP sink on the other CPU, the gateway pinned to CPU 0. perf and py-spy
are not dependencies: install them to use those flags (``apt-get install -y linux-perf``,
``.venv/bin/pip install py-spy``). Read the results with ``perf report -i FILE --no-children
--sort pid,dso -g none`` or by folding py-spy's raw stacks.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

from gateway.tools.bench.runner import (
    API_KEY,
    CLIENT_TOKEN,
    HIT_PATH,
    Bench,
    Target,
    stat_cpu_seconds,
)

REFERENCES = {"bare": "gateway.tools.bench.bare_proxy", "floor": "gateway.tools.bench.floor_proxy", "static": "gateway.tools.bench.static_answer"}
ABLATIONS = ("constant-handler", "no-bookkeeping", "lean-hit")
ABLATE_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ablate")


def thread_cpu_s(pid: int) -> dict[str, float]:
    return {tid: stat_cpu_seconds(f"/proc/{pid}/task/{tid}/stat") for tid in os.listdir(f"/proc/{pid}/task")}


def profiler(args: argparse.Namespace, pid: int) -> subprocess.Popen[bytes] | None:
    if args.perf:
        argv = [shutil.which("perf") or "perf", "record", "-F", "999", "-g", "-p", str(pid), "-o", args.perf]
    elif args.py_spy:
        spy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
        argv = [spy, "record", "--pid", str(pid), "--format", "raw", "--rate", "500", "--nonblocking", "-o", args.py_spy]
    else:
        return None
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.5)  # attached before the measured load starts
    return process


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=40_000)
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="extra environment for the gateway")
    parser.add_argument("--memory-store", action="store_true")
    parser.add_argument("--hit", action="store_true", help="load the shared-read hit path (HIT_PATH) instead of /v1/users/me")
    parser.add_argument("--reference", choices=sorted(REFERENCES), help="measure a reference server instead of the gateway")
    parser.add_argument("--ablate", action="append", default=[], choices=ABLATIONS, help="start the gateway without this part (bench/ablate/)")
    parser.add_argument("--perf", metavar="FILE")
    parser.add_argument("--py-spy", metavar="FILE")
    args = parser.parse_args()

    bench = Bench(argparse.Namespace(redis=None, requests=args.requests, connections=16, repetitions=1))
    try:
        store = None if args.memory_store else bench.start_redis()
        sim, _ = bench.start_sim()
        sink = bench.start_sink()
        extra_env = dict(pair.split("=", 1) for pair in args.env)
        if args.ablate:
            extra_env |= {"PYTHONPATH": ABLATE_PATH, "PMC_BENCH_ABLATE": ",".join(args.ablate)}
        if args.reference:
            url, pid = bench.start_reference_proxy(REFERENCES[args.reference], sim)
            target = Target(args.reference, url, [f"Authorization: Bearer {API_KEY}"], pid)
        else:
            if "lean-hit" in args.ablate:  # it only reads entries: a real gateway on the same Redis stores one
                if store is None:
                    parser.error("--ablate lean-hit reads the entry a real gateway stored: it needs the Redis store")
                warm_url, warm_pid = bench.start_gateway(sim, store, sink)
                warm = urllib.request.Request(warm_url + HIT_PATH, headers={"Authorization": f"Bearer {CLIENT_TOKEN}"})
                urllib.request.urlopen(warm, timeout=10).close()
                os.kill(warm_pid, signal.SIGTERM)  # pinned to the measured gateway's CPU: gone before the load
            url, pid = bench.start_gateway(sim, store, sink, extra_env)
            path = HIT_PATH if args.hit or "lean-hit" in args.ablate else "/v1/users/me"
            target = Target("pmc-gateway", url, [f"Authorization: Bearer {CLIENT_TOKEN}"], pid, path=path)
        bench.load(target, 3_000, 16)  # warm up
        watching = profiler(args, pid)
        before = thread_cpu_s(pid)
        result = bench.load(target, args.requests, 16)
        after = thread_cpu_s(pid)
        if watching is not None:
            watching.send_signal(signal.SIGINT)
            watching.wait(60)
        threads = {tid: (cpu - before.get(tid, 0.0)) / result["count"] * 1e6 for tid, cpu in after.items()}
        summary = {
            "rps": round(result["rps"]),
            "cpu_us_per_request": round(result["cpu_us"], 1),
            "threads_us_per_request": sorted((round(us, 1) for us in threads.values() if us >= 0.5), reverse=True),
        }
        print(json.dumps(summary))
    finally:
        bench.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
