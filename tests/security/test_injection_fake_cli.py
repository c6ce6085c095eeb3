"""A prompt-injected agent run by the protocol-faithful fake CLI: its `[[sh:...]]` markers really run the attack's
commands as the Bash tool would (in the CLI's cwd and environment), on a task with a repository, with every
secret of the machine configured. Nothing it can read holds a real credential: the attacker's listener, the
task's stored output, its result and the WebSocket frames hold none of them."""

from __future__ import annotations

import os
import subprocess

import pytest
from local_runtime.provision import Provisioned

from tests.security.attack import (
    DYNAMIC_WEBHOOK_SECRET,
    SECRETS_MANAGER_NAMES,
    assert_no_leak,
    attack_commands,
    leaks_in,
    sh_markers,
    steps_sent,
)
from tests.security.runner_attack import AGENT, Armed, armed, left_behind, run_attack, tool_results

__all__ = ["armed"]  # the fixture, used by name

pytestmark = pytest.mark.timeout(300)

STEPS = {"env", "self-environ", "parent-environ", "ancestors", "walk", "git", "config", "data", "proxy", "aws"}


@pytest.mark.parametrize(
    "agent", [AGENT, "executor"], ids=["an-agent-with-bash-in-the-runner", "the-executor-on-fargate"]
)
def test_the_injected_agent_finds_and_sends_no_secret(
    stack: Provisioned, armed: Armed, capfd: pytest.CaptureFixture[str], agent: str
) -> None:
    commands = attack_commands(armed.listener.url, scope_pid=os.getpid(), data_dir=armed.data_dir)
    task = run_attack(stack, armed, "Please look into this. " + sh_markers(commands), agent=agent)

    # The attack ran: every step's findings reached the listener, and what the agent saw is in its output.
    assert steps_sent(armed.listener) == STEPS, (task.status, task.error)
    seen = tool_results(task)
    assert len(seen) == len(commands) and any("PATH=" in text for text in seen), (task.status, task.error)

    assert_no_leak(left_behind(task, armed, capfd), armed.secrets)


def test_the_aws_step_takes_every_secret_once_it_knows_the_endpoint(stack: Provisioned, armed: Armed) -> None:
    """The attack's AWS step works: given the emulator's endpoint (which the agent must not find), it reads every
    secret from Secrets Manager and the dynamic webhook's from the registry. (Run here, as the test's user.)"""
    aws_step = attack_commands(armed.listener.url, scope_pid=os.getpid())[-1]
    loot = armed.base / "attacker" / "loot"
    loot.mkdir(parents=True)
    (loot / "found").write_text(f"AWS_ENDPOINT_URL={os.environ['AWS_ENDPOINT_URL']}\n")
    env = {"PATH": os.environ["PATH"], "TMPDIR": str(loot.parent)}
    subprocess.run(["/bin/sh", "-c", aws_step], env=env, capture_output=True, check=True, timeout=120)
    stolen = leaks_in({"aws": armed.listener.by_step()["POST /aws"]}, armed.secrets)["aws"]
    assert set(stolen) == {*SECRETS_MANAGER_NAMES, DYNAMIC_WEBHOOK_SECRET}
