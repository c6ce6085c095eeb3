// One task: its record (status, agent, source, cost, times), prompt, result, errors, parent and children,
// Stop and Approve buttons, and the live output.
import { h, replace, toast } from "../dom.js";
import { listOf } from "../api.js";
import { money, duration, dateTime, ago, sourceLabel, isActive, count, shortId } from "../format.js";
import { renderMarkdown } from "../markdown.js";
import { Transcript } from "../transcript.js";
import { badge, setBadge, applyLifecycle, unwrapTask, loadTask, errorBox, loading, empty } from "./common.js";

export function taskView(ctx, params) {
  const { api, live, streams } = ctx;
  const taskId = params.id;
  let task = null;
  let destroyed = false;

  const statusEl = badge("…", "task-status");
  const titleEl = h("h1", { class: "task-title", testid: "task-title" }, "Task");
  const stopBtn = h("button", { class: "btn btn-danger", testid: "task-stop", hidden: true, onclick: stop }, "Stop");
  const approveBtn = h("button", { class: "btn btn-primary", testid: "task-approve", hidden: true, onclick: approve },
    "Approve plan");
  const facts = h("dl", { class: "facts", testid: "task-facts" });
  const promptEl = h("pre", { class: "prompt", testid: "task-prompt" });
  const resultSection = h("section", { class: "card", testid: "task-result-section", hidden: true },
    h("h2", {}, "Result"), h("div", { testid: "task-result" }));
  const planSection = h("section", { class: "card", testid: "task-plan-section", hidden: true },
    h("h2", {}, "Plan"), h("div", { testid: "task-plan" }));
  const errorSection = h("section", { class: "card card-error", testid: "task-error-section", hidden: true },
    h("h2", {}, "Error"), h("pre", { testid: "task-error" }));
  const relations = h("section", { class: "card", testid: "task-relations", hidden: true });
  const outputEl = h("div", { class: "transcript verbose", testid: "task-output" });
  const outputState = h("span", { class: "muted small", testid: "task-output-state" });
  const body = h("div", { class: "task-body" },
    h("section", { class: "card" }, h("h2", {}, "Prompt"), promptEl),
    errorSection, planSection, resultSection, relations,
    h("section", { class: "card" }, h("h2", {}, "Output ", outputState), outputEl));
  const el = h("div", { class: "page task-page", testid: "task-view", dataset: { taskId } },
    h("a", { href: "#/tasks", class: "back muted" }, "← Tasks"),
    h("div", { class: "page-head" }, h("div", { class: "title-line" }, titleEl, statusEl),
      h("div", { class: "page-actions" }, approveBtn, stopBtn)),
    facts, h("div", { testid: "task-loading" }, loading()), body);
  body.hidden = true;

  const transcript = new Transcript(outputEl, { verbose: true, onEnd: () => refresh() });
  const stream = streams.stream(taskId);
  const releaseSub = live.subscribe({ kind: "task", id: taskId });
  const unlisten = stream.listen((event) => {
    transcript.add(event);
    outputEl.querySelector(".empty")?.remove();
    if (task && applyLifecycle(task, event)) render();
    outputState.textContent = `${stream.released} events`;
  });

  function fact(label, value, testid) {
    return h("div", { class: "fact" }, h("dt", {}, label), h("dd", { testid }, value ?? "—"));
  }

  function render() {
    if (!task) return;
    titleEl.textContent = task.title || `Task ${shortId(task.task_id)}`;
    setBadge(statusEl, task.status);
    el.dataset.status = task.status;
    stopBtn.hidden = !isActive(task.status);
    const planning = task.agent === "planning" || task.agent === "planner";
    // Approvable: a completed planning task with a plan, and no executor already queued, running or done.
    approveBtn.hidden = !(planning && task.status === "completed" && task.plan && !task.approved);
    const usage = task.usage || {};
    replace(facts,
      fact("Agent", task.agent, "task-agent"),
      fact("Source", sourceLabel(task), "task-source"),
      fact("Cost", money(task.cost_usd || 0), "task-cost"),
      fact("Duration", task.duration_ms ? duration(task.duration_ms) : "—", "task-duration"),
      fact("Turns", task.num_turns ? String(task.num_turns) : "—"),
      fact("Tokens", usage.input_tokens || usage.output_tokens
        ? `${count(usage.input_tokens)} in · ${count(usage.output_tokens)} out` : "—"),
      fact("Created", h("span", { title: dateTime(task.created_at) }, ago(task.created_at))),
      fact("Started", task.started_at ? dateTime(task.started_at) : "—"),
      fact("Finished", task.finished_at ? dateTime(task.finished_at) : "—"),
      fact("Session", task.session_id
        ? h("a", { href: `#/chat/${encodeURIComponent(task.session_id)}` }, shortId(task.session_id)) : "—"),
      task.run_mode ? fact("Runner", `${task.run_mode}${task.attempt > 1 ? ` · attempt ${task.attempt}` : ""}`) : null,
      task.repo ? fact("Origin", originLinks(task.repo)) : null,
      reportFact(task.report));
    promptEl.textContent = task.prompt || "";
    resultSection.hidden = !task.result;
    if (task.result) replace(resultSection.querySelector("[data-testid=task-result]"), renderMarkdown(task.result));
    planSection.hidden = !task.plan || task.plan === task.result;
    if (!planSection.hidden) replace(planSection.querySelector("[data-testid=task-plan]"), renderMarkdown(task.plan));
    errorSection.hidden = !task.error;
    errorSection.querySelector("pre").textContent = task.error
      ? `${task.error}${task.error_kind && task.error_kind !== task.status ? ` (${task.error_kind})` : ""}` : "";
  }

  /** Report-back state (task.report): links to the comments posted on the source, or why reporting failed. */
  function reportFact(report) {
    if (!report || typeof report !== "object" || !Object.keys(report).length) return null;
    const safe = (href) => typeof href === "string" && /^https?:\/\//.test(href);
    const names = { github: "GitHub comment", jira: "Jira comment", sentry: "Sentry note" };
    const parts = [];
    for (const [key, value] of Object.entries(report)) {
      const m = /^(\w+?)_comment_url$/.exec(key);
      if (m && safe(value)) {
        parts.push(h("a", { href: value, target: "_blank", rel: "noopener noreferrer", testid: "task-report-link" },
          names[m[1]] || `${m[1]} comment`));
      }
    }
    if (safe(report.pr_url)) {
      parts.push(h("a", { href: report.pr_url, target: "_blank", rel: "noopener noreferrer", testid: "task-report-pr" },
        "pull request"));
    }
    if (!parts.length && Object.keys(report).some((k) => k.endsWith("_comment_id"))) parts.push("comment posted");
    if (report.error) parts.push(h("span", { class: "error-text", testid: "task-report-error" }, `failed: ${report.error}`));
    const attempts = Number(report.attempts);
    if (attempts > 1) parts.push(h("span", { class: "muted small" }, `${attempts} attempts`));
    if (!parts.length) return null;
    return fact("Report back", h("span", {}, parts.flatMap((p, i) => (i ? [" · ", p] : [p]))), "task-report");
  }

  function originLinks(repo) {
    const links = [];
    const link = (href, text) => (href && /^https?:\/\//.test(href)
      ? h("a", { href, target: "_blank", rel: "noopener noreferrer" }, text) : text);
    if (repo.full_name) {
      const num = repo.issue_number || repo.pr_number;
      links.push(link(repo.comment_url || repo.issue_url, `${repo.full_name}${num ? `#${num}` : ""}`));
    }
    if (repo.jira_issue_key) links.push(link(repo.jira_base_url ? `${repo.jira_base_url}/browse/${repo.jira_issue_key}` : null, repo.jira_issue_key));
    if (repo.sentry_url || repo.sentry_issue_id) links.push(link(repo.sentry_url, `Sentry ${repo.sentry_issue_id || ""}`));
    return links.length ? links.flatMap((l, i) => (i ? [" · ", l] : [l])) : "—";
  }

  async function loadRelations() {
    const parts = [];
    if (task.parent_task_id) {
      parts.push(h("p", {}, "Parent: ", h("a", { href: `#/tasks/${encodeURIComponent(task.parent_task_id)}`, testid: "task-parent" },
        shortId(task.parent_task_id))));
    }
    try {
      const children = listOf(await api.get(`/api/tasks/${encodeURIComponent(taskId)}/children`), "children", "tasks");
      // A plan is approved once an executor task follows from it.
      if (children.some((c) => c.agent === "executor" && ["queued", "running", "completed"].includes(c.status))) {
        task.approved = true;
        render();
      }
      if (children.length) {
        parts.push(h("h3", {}, "Sub-tasks"), h("ul", { class: "children", testid: "task-children" }, children.map((c) =>
          h("li", {}, badge(c.status), " ", h("a", { href: `#/tasks/${encodeURIComponent(c.task_id)}` }, c.title || shortId(c.task_id)),
            h("span", { class: "muted small" }, ` ${c.agent || ""} · ${money(c.cost_usd || 0)}`)))));
      }
    } catch {
      /* optional */
    }
    if (destroyed) return;
    relations.hidden = !parts.length;
    replace(relations, h("h2", {}, "Related tasks"), parts);
  }

  async function refresh(first = false) {
    try {
      let shown = false;
      await loadTask(api, taskId, {
        after: stream.released,
        cancelled: () => destroyed,
        onPage: (output, fresh) => {
          if (!shown) {
            shown = true;
            task = fresh;
            stream.sessionId = stream.sessionId || task.session_id;
          }
          stream.addAll(output);
        },
      });
      if (destroyed) return;
      // The record can lag the stream (read before the run was booked): the stream's end wins.
      if (transcript.ended) applyLifecycle(task, transcript.ended);
      el.querySelector("[data-testid=task-loading]")?.remove();
      body.hidden = false;
      render();
      if (first) {
        loadRelations();
        if (!stream.released) outputEl.append(empty(isActive(task.status) ? "Waiting for output…" : "No output was kept."));
      }
    } catch (err) {
      if (destroyed) return;
      replace(el.querySelector("[data-testid=task-loading]") || body, errorBox(err, "task-load-error"));
    }
  }

  async function stop() {
    stopBtn.disabled = true;
    try {
      const data = await api.post(`/api/tasks/${encodeURIComponent(taskId)}/stop`);
      const { task: updated } = unwrapTask(data);
      if (updated?.status) Object.assign(task, updated);
      toast(task.status === "stopped" ? "Stopped." : "Stop requested: the run is being interrupted.");
      render();
    } catch (err) {
      toast(`Could not stop: ${err.message}`, "error");
    } finally {
      stopBtn.disabled = false;
    }
  }

  async function approve() {
    approveBtn.disabled = true;
    try {
      const data = await api.post(`/api/tasks/${encodeURIComponent(taskId)}/approve`);
      const next = data?.task_id || data?.task?.task_id;
      toast("Plan approved: the executor will carry it out.");
      task.approved = true;
      render();
      if (next && next !== taskId) location.hash = `#/tasks/${encodeURIComponent(next)}`;
    } catch (err) {
      toast(`Could not approve: ${err.message}`, "error");
    } finally {
      approveBtn.disabled = false;
    }
  }

  // Without the socket, an active task is followed by polling its record and output.
  const poll = setInterval(() => {
    if (task && isActive(task.status) && live.state !== "online") refresh();
  }, 5000);

  refresh(true);
  return {
    el,
    destroy() {
      destroyed = true;
      clearInterval(poll);
      unlisten();
      releaseSub();
    },
  };
}
