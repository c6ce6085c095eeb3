"""`python -m local_runtime`: the whole agent machine on this computer (what `make run-local` runs)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from local_runtime.logs import log
from local_runtime.runtime import LocalConfig, LocalMachine
from local_runtime.template import ROOT, TEMPLATE_PATH


def load_dotenv(path: Path) -> None:
    """KEY=value lines from .env (comments and blanks skipped); the real environment wins."""
    if not path.exists():
        return
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key, value = key.strip(), value.strip().strip("'\"")
        if value:
            os.environ.setdefault(key, value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="local_runtime", description=__doc__)
    parser.add_argument("--port", type=int, default=None, help="HTTP and WebSocket port (default: $PORT or 8000)")
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--data-dir", type=Path, default=None, help="where local state is kept (default .local/)")
    parser.add_argument("--aws", action="store_true", help="use real AWS (your credentials) instead of an emulator")
    parser.add_argument("--no-persist", action="store_true", help="start empty and keep nothing")
    parser.add_argument("--env-file", type=Path, default=ROOT / ".env")
    parser.add_argument(
        "--template", type=Path, default=None, help="the SAM template to run (default $LOCAL_TEMPLATE, template.yaml)"
    )
    args = parser.parse_args(argv)

    load_dotenv(args.env_file)
    endpoint = os.environ.get("AWS_ENDPOINT_URL") or None
    config = LocalConfig(
        port=args.port if args.port is not None else int(os.environ.get("PORT", "8000")),
        host=args.host,
        data_dir=args.data_dir or Path(os.environ.get("LOCAL_DATA_DIR", ROOT / ".local")),
        endpoint=endpoint,
        real_aws=args.aws,
        env_file=args.env_file,
        persist=not args.no_persist,
        prefix=os.environ.get("LOCAL_STACK_PREFIX", "local"),
        queue_visibility_timeout=int(os.environ["LOCAL_QUEUE_VISIBILITY_TIMEOUT"])
        if os.environ.get("LOCAL_QUEUE_VISIBILITY_TIMEOUT")
        else None,
        template_path=args.template or Path(os.environ.get("LOCAL_TEMPLATE") or TEMPLATE_PATH),
    )
    machine = LocalMachine(config)
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log(f"received {signal.Signals(signum).name}, shutting down")
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        machine.start()
    except Exception as exc:
        log(f"could not start: {exc}")
        machine.stop()
        return 1
    where = "real AWS" if args.aws else (endpoint or f"moto server {machine.endpoint}")
    print(
        f"\n  Agent machine is up (AWS: {where})\n"
        f"  Dashboard:  {machine.base_url}/?token={machine.api_token}\n"
        f"  API:        {machine.base_url}/api  (Authorization: Bearer <token>)\n"
        f"  WebSocket:  {machine.ws_url}\n"
        f"  Press Ctrl-C to stop.\n",
        flush=True,
    )
    stop.wait()
    machine.stop()
    log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
