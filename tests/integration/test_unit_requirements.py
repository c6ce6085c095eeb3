"""Each deployed unit runs on what its requirements.txt installs, and nothing more.

For every zip function and the runner image, the unit's requirements.txt (exported from uv.lock by
`make requirements`) is installed with `uv pip install --target --no-deps` into an empty folder, as `sam build` and
the Dockerfile pip-install it. An isolated interpreter (`-I -S`: no site-packages, so nothing of the test venv) whose
path holds only that folder, the unit's code and CoreLayer then imports every module of the unit and resolves every
import statement in its source, function-level ones included (they run only when called). So a file missing a
dependency fails here, not on Lambda; and the WebSocket function, the sweeper and the runner are shown to ship,
load and need no FastAPI, Mangum or Starlette. Last, `make requirements-check` is shown to catch drift.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYER = ROOT / "layers" / "core" / "python"
WEB_STACK = {"fastapi", "mangum", "starlette"}


@dataclass(frozen=True)
class Unit:
    name: str
    requirements: Path
    code: Path  # the folder that becomes /var/task (or the image's task root) next to the installed packages
    packages: tuple[str, ...]  # the unit's own packages, besides CoreLayer's agent_machine
    web_stack: bool  # whether it may ship FastAPI/Mangum/Starlette


UNITS = [
    Unit("api", ROOT / "functions/api/requirements.txt", ROOT / "functions/api", ("machine_api",), web_stack=True),
    Unit("ws", ROOT / "functions/ws/requirements.txt", ROOT / "functions/ws", ("machine_ws",), web_stack=False),
    Unit(
        "sweeper",
        ROOT / "functions/sweeper/requirements.txt",
        ROOT / "functions/sweeper",
        ("machine_sweeper",),
        web_stack=False,
    ),
    Unit("runner", ROOT / "runner_container/requirements.txt", ROOT / "runner_container", ("runner",), web_stack=False),
]

# Runs in the isolated interpreter: stdlib only. Imports every module of the given packages, then checks that the
# top-level name of every import statement in their source (outside `if TYPE_CHECKING:`) can be found.
PROBE = r"""
import ast, importlib, importlib.util, json, pkgutil, sys

packages = json.loads(sys.argv[1])
failed, unresolved, names = {}, {}, set()

def imported_names(tree):
    found = set()
    def visit(node):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
        for child in ast.iter_child_nodes(node):
            visit(child)
    visit(tree)
    return found

modules = []
for package in packages:
    root = importlib.import_module(package)
    modules.append(root)
    for info in pkgutil.walk_packages(root.__path__, package + "."):
        try:
            modules.append(importlib.import_module(info.name))
        except Exception as exc:
            failed[info.name] = repr(exc)
for module in modules:
    source = getattr(module, "__file__", None)
    if source and source.endswith(".py"):
        with open(source, encoding="utf-8") as handle:
            for name in imported_names(ast.parse(handle.read())):
                names.add(name)
                if importlib.util.find_spec(name) is None:
                    unresolved.setdefault(name, []).append(module.__name__)
print(json.dumps({
    "imported": sorted(m.__name__ for m in modules),
    "failed": failed,
    "unresolved": unresolved,
    "names": sorted(names),
    "loaded": sorted({name.split(".")[0] for name in sys.modules}),
}))
"""


def uv() -> str:
    # `uv run` exports its own path as UV; otherwise the uv on PATH (the Makefile's, CI's).
    found = os.environ.get("UV") or shutil.which("uv")
    assert found, "uv is needed to install the requirements (it is what `make sync` uses)"
    return found


def requirement_names(path: Path) -> set[str]:
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return {line.split("==")[0].split("[")[0].split(";")[0].strip().lower() for line in lines if line}


@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_unit_runs_on_its_requirements_alone(unit: Unit, tmp_path: Path) -> None:
    target = tmp_path / "site"
    pip = [uv(), "pip", "install", "--quiet", "--no-deps", "--python", sys.executable, "--target", str(target)]
    install = subprocess.run(
        [*pip, "--requirement", str(unit.requirements)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stderr

    # Lambda's order: the function's folder (its code and what pip put there), then the layer (/opt/python).
    path = [str(target), str(unit.code), str(LAYER)]
    env = {"PATH": os.environ.get("PATH", ""), "AWS_DEFAULT_REGION": "us-east-1", "TMPDIR": str(tmp_path)}
    script = f"import sys; sys.path[:0] = {path!r}\n{PROBE}"
    probe = subprocess.run(
        [sys.executable, "-I", "-S", "-c", script, json.dumps(["agent_machine", *unit.packages])],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert probe.returncode == 0, probe.stderr
    report = json.loads(probe.stdout.strip().splitlines()[-1])

    assert report["failed"] == {}, report["failed"]
    assert report["unresolved"] == {}, report["unresolved"]
    # The walk reached the unit's handlers and the whole layer (a probe that imported nothing would prove nothing).
    assert {"agent_machine.store", "agent_machine.domain", *unit.packages} <= set(report["imported"])
    assert "boto3" in report["names"] and "pydantic" in report["names"]

    shipped = requirement_names(unit.requirements)
    if unit.web_stack:
        assert {"fastapi", "mangum"} <= shipped
        assert {"fastapi", "mangum"} <= set(report["loaded"])
    else:
        assert shipped.isdisjoint(WEB_STACK), shipped & WEB_STACK
        assert WEB_STACK.isdisjoint(report["names"]), "its source imports the web stack"
        assert WEB_STACK.isdisjoint(report["loaded"])


def make(target: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    found = shutil.which("make")
    assert found, "make runs the checks in CI (.ci/run -> make test)"
    return subprocess.run(
        [found, "--no-print-directory", target, f"UV={uv()}"], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_requirements_check_fails_on_drift_and_on_a_stale_lock(tmp_path: Path) -> None:
    """`make requirements-check` (run by `make lint`) on a copy of the files it reads: clean, then each drift."""
    files = [
        "Makefile",
        "pyproject.toml",
        "uv.lock",
        "README.md",
        *(str(u.requirements.relative_to(ROOT)) for u in UNITS),
    ]
    for name in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, tmp_path / name)

    clean = make("requirements-check", tmp_path)
    assert clean.returncode == 0, clean.stdout + clean.stderr

    # A hand edit (a pin changed) in one unit's file: named, with the diff.
    sweeper = tmp_path / "functions/sweeper/requirements.txt"
    sweeper.write_text(re.sub(r"^urllib3==.*$", "urllib3==1.0.0", sweeper.read_text(), count=1, flags=re.MULTILINE))
    drift = make("requirements-check", tmp_path)
    assert drift.returncode != 0
    assert "functions/sweeper/requirements.txt drifted from uv.lock" in drift.stdout
    assert "-urllib3==1.0.0" in drift.stdout
    assert "functions/ws/requirements.txt drifted" not in drift.stdout

    # `make requirements` puts it back, byte for byte what is committed.
    regenerate = make("requirements", tmp_path)
    assert regenerate.returncode == 0, regenerate.stderr
    assert sweeper.read_text() == (ROOT / "functions/sweeper/requirements.txt").read_text()
    assert make("requirements-check", tmp_path).returncode == 0

    # A dependency added to pyproject.toml without `uv lock`: the exports would silently miss it.
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"boto3>=1.35",', '"boto3>=1.35",\n    "httpx>=0.27",', 1))
    stale = make("requirements-check", tmp_path)
    assert stale.returncode != 0
    assert "uv.lock does not match pyproject.toml" in stale.stdout
