"""Shared core of the agent machine: domain models, stores, queue, WebSocket push and settings.

Ships as the `CoreLayer` Lambda layer (/opt/python/agent_machine) and inside the runner image. Nothing here
imports from `functions/`, `runner_container/` or `infra/`.
"""
