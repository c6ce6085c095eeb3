"""The embedded AWS emulator: a moto server in a child process (its own CPU, killed with us)."""

from __future__ import annotations

import ctypes
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ACCESS_KEY_ENV = "LOCAL_EMULATOR_ACCESS_KEY_ID"  # read by moto_main: the only access key it answers


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range: a port the kernel hands out for outgoing
    connections could be taken by one between this check and the listener's bind (seen under a full suite)."""
    low = _ephemeral_low()
    for _ in range(50):
        candidate = random.randrange(10000, low) if low > 10000 else 0
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class MotoServer:
    port: int
    process: subprocess.Popen[bytes]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, timeout: float = 5.0) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_moto(port: int | None = None, *, timeout: float = 30.0, access_key_id: str | None = None) -> MotoServer:
    """A moto server on loopback. With `access_key_id`, it answers only requests signed with that access key
    (moto_main). The port and key go through the child's environment, which other users cannot read, not its
    command line, which they can (/proc/<pid>/cmdline)."""
    port = port or free_port()
    env = {**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "true", "MOTO_PORT": str(port)}
    env.pop("AWS_ENDPOINT_URL", None)
    env.pop(ACCESS_KEY_ENV, None)
    headers: dict[str, str] = {}
    if access_key_id:
        env[ACCESS_KEY_ENV] = access_key_id
        # What the readiness probe shows (moto_main compares the access key id only).
        headers["Authorization"] = f"AWS4-HMAC-SHA256 Credential={access_key_id}/19700101/us-east-1/moto/aws4_request"
    # Its own session: a Ctrl-C in the terminal reaches us, not the emulator, so we can save state first.
    # The parent-death signal still takes it down if we are killed outright.
    process = subprocess.Popen(
        [sys.executable, "-m", "local_runtime.moto_main"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )
    server = MotoServer(port, process)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto server exited with {process.returncode}")
        try:
            probe = urllib.request.Request(f"{server.endpoint}/moto-api/", headers=headers)  # noqa: S310 - loopback
            with urllib.request.urlopen(probe, timeout=1):  # noqa: S310 - loopback
                return server
        except OSError:
            time.sleep(0.1)
    server.stop()
    raise RuntimeError("moto server did not start in time")
