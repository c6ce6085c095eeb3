"""`make db-shell`: a Python prompt over the machine's data, wherever the configuration points.

With run-local running, it attaches to that machine's emulator (read from .local/runtime.json); otherwise it uses
the environment (AWS_ENDPOINT_URL for LocalStack, or your AWS credentials and the table names of a deployment).
"""

from __future__ import annotations

import code
import json
import os
from typing import Any

from agent_machine.models import TaskStatus
from agent_machine.store import costs as cost_store
from agent_machine.store import output as output_store
from agent_machine.store import sessions as session_store
from agent_machine.store import tasks as task_store

from local_runtime.template import ROOT


def _attach() -> str:
    info_path = ROOT / ".local" / "runtime.json"
    if info_path.exists() and not os.environ.get("TASKS_TABLE"):
        info = json.loads(info_path.read_text())
        os.environ.update(info["env"])
        if info.get("endpoint"):
            os.environ["AWS_ENDPOINT_URL"] = info["endpoint"]
            # The emulator answers only the running machine's own credentials.
            os.environ.update(info.get("credentials") or {})
        os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        return f"run-local (pid {info['pid']}, emulator {info.get('endpoint')})"
    return f"environment (endpoint {os.environ.get('AWS_ENDPOINT_URL') or 'AWS'})"


def main() -> None:
    where = _attach()

    def tasks(status: str | None = None, limit: int = 20) -> None:
        page = task_store.list_tasks(status=TaskStatus(status) if status else None, limit=limit)
        for t in page.items:
            print(
                f"{t.created_at:%Y-%m-%d %H:%M:%S}  {t.task_id}  {t.status.value:<9} {t.agent:<9} "
                f"{t.source.value:<7} ${t.cost_usd:.4f}  {(t.title or '')[:50]}"
            )

    def task(task_id: str) -> Any:
        return task_store.get(task_id)

    def output(task_id: str) -> None:
        for event in output_store.read_events(task_id):
            print(event.seq, event.type.value, json.dumps(event.payload)[:160])

    def sessions(limit: int = 20) -> None:
        for s in session_store.list_sessions(limit)[0]:
            print(
                f"{s.updated_at:%Y-%m-%d %H:%M}  {s.session_id}  tasks={s.task_count:<3} "
                f"${s.total_cost_usd:.4f}  {s.title[:50]}"
            )

    def costs(day: str | None = None) -> None:
        for record in cost_store.day_records(day or cost_store.today()):
            print(f"{record.key:<40} ${record.cost_usd:.4f}  tasks={record.tasks}")

    banner = (
        f"agent machine data shell: {where}\n"
        "  tasks(status=None, limit=20)  task(id)  output(id)  sessions()  costs(day=None)\n"
        "  stores: task_store, session_store, output_store, cost_store"
    )
    code.interact(banner=banner, local={**locals(), "TaskStatus": TaskStatus}, exitmsg="")


if __name__ == "__main__":
    main()
