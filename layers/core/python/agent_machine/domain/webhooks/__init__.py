"""Webhook ingress: verify, parse, decide and record deliveries from GitHub, Jira, Sentry and user-defined senders.

Layout (every module but `ingest` and `plans` is pure: no AWS calls, cheap to import):
- signatures: HMAC checks over the raw body, constant time.
- text, prompts: payload text made safe and quoted into prompts as delimited, untrusted data.
- rules: trigger phrase, label, author allow-list, approve / stop comments.
- github, jira, sentry, dynamic: per-sender pydantic models and the decision for one delivery.
- filters, templates: the small filter language and prompt templates of dynamic webhooks.
- decisions: what a decision can be (ignore, answer, create a task, stop a thread's tasks).
- dedupe: the source-event keys (a comment, a label event, an alert) that make one task of one event however many
  webhooks deliver it.
- plans: "does this thread have a plan", approval into an executor task (also used by the REST API).
- ingest: records a decision (one conditional write, or one transaction + one SendMessage) and replays the
  first answer to redeliveries.
"""
