"""A stand-in for the API Gateway management API in its own process, for benchmarks of the runner.

    python bench/receiver_process.py      (prints its port on the first line of stdout, then serves)

`POST /@connections/{id}` records (arrival time, connection id, body) and answers 200; `GET /arrivals?from=N`
answers the records from the N-th on and the number of calls, as JSON. In-process, the receiver's threads took
the runner's GIL while it parsed and pushed (about a seventh of the runner's busy samples under a 2,000-line
burst), so it slowed what it measured. The arrival time is `time.monotonic()`: on Linux CLOCK_MONOTONIC is one
clock for every process of the machine, so it compares with the runner's own stamps.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

_lock = threading.Lock()
_arrivals: list[tuple[float, str, str]] = []
_calls = [0]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

    def log_message(self, *args: Any) -> None:
        pass

    def _reply(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        now = time.monotonic()
        connection_id = self.path.rsplit("/@connections/", 1)[-1]
        with _lock:
            _calls[0] += 1
            _arrivals.append((now, connection_id, body.decode()))
        self._reply(200, b"{}")

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path != "/arrivals":
            self._reply(404, b'{"message":"Not Found"}')
            return
        start = int((parse_qs(url.query).get("from") or ["0"])[0])
        with _lock:
            answer = {"calls": _calls[0], "arrivals": _arrivals[start:]}
        self._reply(200, json.dumps(answer).encode())


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    sys.stdout.write(f"{server.server_address[1]}\n")
    sys.stdout.flush()
    server.serve_forever()


if __name__ == "__main__":
    main()
