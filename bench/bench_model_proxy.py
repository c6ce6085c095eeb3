"""Model proxy benchmark: time to first byte through the runner's model proxy ÷ direct to the same upstream.

    uv run python bench/bench_model_proxy.py --out bench/results/raw/model_proxy.json [--quick]

Three processes, as in production: a stand-in Messages API (a subprocess: `--serve`), the "runner" (this process:
the real `runner.model_proxy.ModelProxy`, forwarding with a real key it holds), and a client playing the CLI (a
subprocess: `--client`, one keep-alive connection to each side, like the CLI's own pool). Each pair of samples
sends the same streamed request (`stream: true`, a 120 KB body: the size of a Claude Code turn with its system
prompt, tool schemas and some conversation) once directly and once through the proxy, in alternating order, and
times the first body byte (the `message_start` event) at the client. Direct and proxied samples share the same
moment's noise; the figure is p95(proxied) ÷ p95(direct), and the absolute added time per pair (proxied minus
direct, p50/p95) is reported next to it.

The upstream's first-byte delay: 300 ms. A model's time to first token is the round trip to the API (10-70 ms
from an AWS region or a laptop, TLS already up), the upload of the request (50-300 KB at 0.1-1 Gbit/s: 0.5-25 ms),
queueing, then prefill: the model reads every input token before it writes the first. A Claude Code turn is
20k-100k tokens; with prompt caching most are cache reads, but the uncached tail (the new tool results, often
thousands of tokens) and the first decoding step of a large model take hundreds of milliseconds, and measured
streaming time-to-first-token of Sonnet- and Opus-class models on such prompts is typically 0.5-2 s. 300 ms is
below that range on purpose: the shorter the upstream's own time, the larger any fixed overhead looks in a
ratio, so this is the least flattering plausible upstream. A loopback fake answering in ~1 ms would make any
hop, even a perfect one, look like a 1.5x slowdown; that ratio is reported too (`ratio_at_0ms`), only to show
what the proxy costs when nothing else does. The added milliseconds do not depend on the delay.

A third run keeps the runner's event loop busy meanwhile (`busy_runner_loop`: a thread's asyncio loop parsing
and re-serialising 1 KB JSON lines at about half of one core, as the output pipeline does under a burst): the
proxy's threads then wait for the GIL, and that run says how much.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from http.client import HTTPConnection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
REAL_KEY = "sk-ant-bench-real-key"
FIRST_BYTE_MS = 300.0
BODY_KB = 120
EVENTS = 30  # content deltas after message_start


def sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


# --------------------------------------------------------------------------------------------- the upstream


class Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # as any production HTTP server: no 40 ms Nagle/delayed-ACK stalls

    def log_message(self, *args: Any) -> None:
        pass

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        if self.headers.get("x-api-key") != REAL_KEY:  # the proxy must have put the runner's key on
            body = b'{"type":"error","error":{"type":"authentication_error","message":"bad key"}}'
            self.send_response(401)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        time.sleep(float(self.headers.get("x-bench-first-byte-ms") or 0) / 1000)
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        usage = {"input_tokens": 20000, "output_tokens": 1}
        message = {"id": "m", "model": "claude-sonnet-4-5", "content": [], "usage": usage}
        start = {"type": "message_start", "message": message}
        events = [sse("message_start", start)]
        delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "word " * 4}}
        events += [sse("content_block_delta", delta)] * EVENTS
        events.append(sse("message_delta", {"type": "message_delta", "delta": {}, "usage": {"output_tokens": 40}}))
        events.append(sse("message_stop", {"type": "message_stop"}))
        for event in events:
            self.wfile.write(b"%x\r\n%b\r\n" % (len(event), event))
        self.wfile.write(b"0\r\n\r\n")


def serve() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


# --------------------------------------------------------------------------------------------- the client (the CLI)


def ttfb_ms(conn: HTTPConnection, body: bytes, headers: dict[str, str]) -> float:
    started = time.perf_counter()
    conn.request("POST", "/v1/messages", body=body, headers=headers)
    response = conn.getresponse()
    first = response.read1(65536)
    took = (time.perf_counter() - started) * 1000
    assert response.status == 200 and first.startswith(b"event: message_start"), (response.status, first[:200])
    response.read()
    return took


def connect(port: int) -> HTTPConnection:
    """A keep-alive connection with TCP_NODELAY, as the CLI's (Node's) sockets have."""
    conn = HTTPConnection("127.0.0.1", port, timeout=60)
    conn.connect()
    assert conn.sock is not None
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


def client(args: argparse.Namespace) -> None:
    filler = "x" * (BODY_KB * 1024)
    body = json.dumps(
        {
            "model": "claude-sonnet-4-5",
            "max_tokens": 1024,
            "stream": True,
            "messages": [{"role": "user", "content": filler}],
        }
    ).encode()
    common = {"content-type": "application/json", "x-bench-first-byte-ms": str(args.first_byte_ms)}
    direct, proxied = connect(args.direct_port), connect(args.proxy_port)
    sides = {
        "direct": (direct, {**common, "x-api-key": REAL_KEY}),
        "proxy": (proxied, {**common, "x-api-key": args.token}),
    }
    for _ in range(args.warmup):
        for conn, headers in sides.values():
            ttfb_ms(conn, body, headers)
    pairs: list[tuple[float, float]] = []
    for i in range(args.pairs):
        order = ("direct", "proxy") if i % 2 == 0 else ("proxy", "direct")
        took: dict[str, float] = {}
        for side in order:
            conn, headers = sides[side]
            took[side] = ttfb_ms(conn, body, headers)
        pairs.append((took["direct"], took["proxy"]))
    print(json.dumps(pairs))


# --------------------------------------------------------------------------------------------- the runner


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def busy_loop(stop: threading.Event) -> None:
    """The runner's output pipeline under a burst: parse and re-serialise JSON lines, about half of one core."""
    line = json.dumps({"type": "assistant", "message": {"content": [{"type": "text", "text": "y" * 900}]}})

    async def pump() -> None:
        while not stop.is_set():
            until = time.perf_counter() + 0.002
            while time.perf_counter() < until:
                json.dumps(json.loads(line))
            await asyncio.sleep(0.002)

    asyncio.run(pump())


def scenario(proxy_port: int, direct_port: int, token: str, *, pairs: int, first_byte_ms: float, busy: bool) -> Any:
    stop = threading.Event()
    loop = threading.Thread(target=busy_loop, args=(stop,), daemon=True) if busy else None
    if loop is not None:
        loop.start()
    try:
        done = subprocess.run(
            [
                sys.executable,
                __file__,
                "--client",
                "--direct-port",
                str(direct_port),
                "--proxy-port",
                str(proxy_port),
                "--token",
                token,
                "--pairs",
                str(pairs),
                "--first-byte-ms",
                str(first_byte_ms),
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
        )
    finally:
        stop.set()
        if loop is not None:
            loop.join(10)
    samples: list[list[float]] = json.loads(done.stdout)
    direct = [d for d, _ in samples]
    proxied = [p for _, p in samples]
    added = [p - d for d, p in samples]
    return {
        "pairs": len(samples),
        "first_byte_ms": first_byte_ms,
        "direct_ms": {"p50": round(percentile(direct, 0.5), 3), "p95": round(percentile(direct, 0.95), 3)},
        "proxy_ms": {"p50": round(percentile(proxied, 0.5), 3), "p95": round(percentile(proxied, 0.95), 3)},
        "added_ms": {
            "p50": round(percentile(added, 0.5), 3),
            "p95": round(percentile(added, 0.95), 3),
            "mean": round(statistics.fmean(added), 3),
        },
        "p95_ratio": round(percentile(proxied, 0.95) / percentile(direct, 0.95), 4),
        "p50_ratio": round(percentile(proxied, 0.5) / percentile(direct, 0.5), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--direct-port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--proxy-port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--token", default="", help=argparse.SUPPRESS)
    parser.add_argument("--pairs", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--first-byte-ms", type=float, default=FIRST_BYTE_MS)
    args = parser.parse_args()
    if args.serve:
        serve()
        return
    if args.client:
        client(args)
        return

    os.environ.setdefault("LOG_JSON", "false")
    from runner import model_proxy

    upstream = subprocess.Popen([sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True)
    try:
        assert upstream.stdout is not None
        direct_port = int(upstream.stdout.readline())
        target = model_proxy.Upstream(
            "anthropic", f"http://127.0.0.1:{direct_port}", "us-east-1", (("x-api-key", REAL_KEY),)
        )
        proxy = model_proxy.ModelProxy(target, model_proxy.Meter(1e9)).start()
        pairs = 15 if args.quick else args.pairs
        runs = {
            "idle": scenario(
                proxy.port, direct_port, proxy.token, pairs=pairs, first_byte_ms=args.first_byte_ms, busy=False
            ),
            "busy_runner_loop": scenario(
                proxy.port,
                direct_port,
                proxy.token,
                pairs=max(10, pairs // 2),
                first_byte_ms=args.first_byte_ms,
                busy=True,
            ),
            "zero_delay": scenario(
                proxy.port, direct_port, proxy.token, pairs=pairs * 3, first_byte_ms=0.0, busy=False
            ),
        }
        proxy.stop()
    finally:
        upstream.terminate()
        upstream.wait(10)
    idle = runs["idle"]
    result = {
        "model_proxy_ttfb_p95_ratio": {
            "value": idle["p95_ratio"],
            "unit": "ratio",
            "baseline": idle["direct_ms"]["p95"],
            "notes": (
                f"time to first byte of a streamed 120 KB request through the runner's model proxy ÷ direct to the "
                f"same stand-in upstream (first byte after {args.first_byte_ms:.0f} ms: bench_model_proxy.py's "
                f"docstring says why), p95 over {idle['pairs']} interleaved pairs; client, proxy (in the 'runner' "
                "process) and upstream in three processes; baseline = direct p95 (ms)"
            ),
            "p50_ratio": idle["p50_ratio"],
            "added_ms": idle["added_ms"],
            "direct_ms": idle["direct_ms"],
            "proxy_ms": idle["proxy_ms"],
            "busy_runner_loop": runs["busy_runner_loop"],
            "ratio_at_0ms": runs["zero_delay"]["p95_ratio"],
            "added_ms_at_0ms": runs["zero_delay"]["added_ms"],
        },
        "runs": runs,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
