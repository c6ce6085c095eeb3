// Chat with the Brain: sessions on the left, the conversation streamed as the CLI writes it, a composer below.
import { h, replace, toast, debounce } from "../dom.js";
import { listOf } from "../api.js";
import { ago, money, isActive, parseTime } from "../format.js";
import { renderMarkdown } from "../markdown.js";
import { Transcript } from "../transcript.js";
import { badge, setBadge, costLine, applyLifecycle, unwrapTask, loadTask, errorBox, empty, loading } from "./common.js";

const DETAILED_TASKS = 15; // the newest tasks of a session load their whole output; older ones show the result

function sessionsFrom(data) {
  return listOf(data, "sessions").slice().sort((a, b) =>
    (parseTime(b.updated_at || b.created_at)?.getTime() || 0) - (parseTime(a.updated_at || a.created_at)?.getTime() || 0));
}

function sessionDetail(data) {
  if (!data || typeof data !== "object") return { session: {}, tasks: [] };
  const session = data.session && typeof data.session === "object" ? data.session : data;
  const tasks = listOf(data.tasks ?? session.tasks, "tasks");
  return { session, tasks };
}

export function chatView(ctx, params) {
  const { api, live, streams } = ctx;
  let sessionId = params.id || null;
  let releaseSub = null;
  let destroyed = false;
  const turns = new Map(); // task_id -> Turn

  const sessionList = h("ul", { class: "session-list", testid: "session-list" });
  const sessionsPane = h("aside", { class: "sessions", testid: "sessions" },
    h("div", { class: "sessions-head" },
      h("h2", {}, "Sessions"),
      h("button", { class: "btn btn-small", testid: "new-session", onclick: () => { location.hash = "#/chat"; } }, "+ New")),
    sessionList);
  const title = h("h2", { class: "conv-title", testid: "session-title" }, "New session");
  const sessionCost = h("span", { class: "muted", testid: "session-cost" });
  const toggle = h("button", { class: "btn btn-small btn-ghost sessions-toggle", testid: "sessions-toggle",
    onclick: () => root.classList.toggle("show-sessions") }, "☰ Sessions");
  const messages = h("div", { class: "messages", testid: "messages", "aria-live": "polite" });
  const input = h("textarea", { class: "composer-input", testid: "chat-input", rows: 2,
    placeholder: "Message the Brain…  (Enter to send, Shift+Enter for a new line)" });
  const send = h("button", { type: "submit", class: "btn btn-primary", testid: "chat-send" }, "Send");
  const composer = h("form", { class: "composer", testid: "composer", onsubmit: (e) => { e.preventDefault(); submit(); } },
    input, send);
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      submit();
    }
  });
  const root = h("div", { class: "chat", testid: "chat-view" }, sessionsPane,
    h("section", { class: "conversation" },
      h("div", { class: "conv-head" }, toggle, title, sessionCost), messages, composer));

  // --- sessions list ------------------------------------------------------------------------------------------
  async function loadSessions() {
    try {
      const list = sessionsFrom(await api.get("/api/sessions"));
      if (destroyed) return;
      replace(sessionList, list.length ? list.map((s) => h("li", {},
        h("a", { href: `#/chat/${encodeURIComponent(s.session_id)}`, testid: "session-item",
          class: ["session-item", s.session_id === sessionId && "active"], dataset: { sessionId: s.session_id } },
        h("span", { class: "session-name" }, s.title || "Untitled"),
        h("span", { class: "session-meta muted" },
          `${ago(s.updated_at || s.created_at)} · ${money(s.total_cost_usd || 0)}`)))) : h("li", { class: "muted" }, "No sessions yet"));
      const current = list.find((s) => s.session_id === sessionId);
      if (current) showSessionHead(current);
    } catch (err) {
      replace(sessionList, h("li", {}, errorBox(err)));
    }
  }
  const refreshSessions = debounce(loadSessions, 800);

  function showSessionHead(session) {
    title.textContent = session.title || "Session";
    const n = session.task_count ?? turns.size;
    sessionCost.textContent = `${money(session.total_cost_usd || 0)} · ${n} message${n === 1 ? "" : "s"}`;
  }

  // --- one exchange: the prompt and the streamed reply --------------------------------------------------------
  class Turn {
    constructor(task, { detailed }) {
      this.task = { ...task };
      this.statusBadge = badge(task.status || "queued", "reply-status");
      this.stopBtn = h("button", { class: "btn btn-small btn-danger", testid: "reply-stop", onclick: () => this.stop() }, "Stop");
      this.body = h("div", { class: "transcript", testid: "reply-body" });
      this.waiting = h("div", { class: "typing muted", testid: "reply-waiting" }, h("span", { class: "dots" }), " working…");
      this.el = h("article", { class: "turn", testid: "turn", dataset: { taskId: task.task_id } },
        h("div", { class: "bubble bubble-user", testid: "user-message" }, task.prompt || task.title || ""),
        h("div", { class: "reply", testid: "reply" },
          h("div", { class: "reply-head" },
            h("span", { class: "agent" }, task.agent || "brain"), this.statusBadge,
            h("a", { href: `#/tasks/${encodeURIComponent(task.task_id)}`, class: "muted small", testid: "reply-task-link" }, "task"),
            this.stopBtn),
          this.body, this.waiting));
      this.transcript = new Transcript(this.body, { onEnd: (e) => this.ended(e) });
      this.detailed = detailed;
      this.unlisten = null;
      this.refreshControls();
      if (detailed || isActive(this.task.status)) this.attach();
      else this.summary();
    }

    attach() {
      this.detailed = true;
      const stream = streams.stream(this.task.task_id, this.task.session_id);
      this.unlisten = stream.listen((e) => {
        this.transcript.add(e);
        if (applyLifecycle(this.task, e)) this.refreshControls();
        if (e.type === "task.output") this.waiting.hidden = true;
        scrollDown();
      });
    }

    async loadOutput() {
      try {
        const stream = streams.stream(this.task.task_id, this.task.session_id);
        let first = true;
        await loadTask(api, this.task.task_id, {
          after: stream.released,
          cancelled: () => destroyed,
          onPage: (output, task) => {
            if (first && task) {
              const before = this.task.status;
              Object.assign(this.task, task);
              // The record can lag the stream (read before the run was booked): the stream's end wins.
              if (this.transcript.ended) applyLifecycle(this.task, this.transcript.ended);
              if (before !== this.task.status) this.refreshControls();
            }
            first = false;
            stream.addAll(output);
          },
        });
        if (destroyed) return;
        if (!isActive(this.task.status) && !this.transcript.ended) this.staticFooter();
      } catch (err) {
        this.body.append(errorBox(err));
      }
    }

    /** An older, finished exchange: its result, with the full output on request. */
    summary() {
      if (this.task.result) this.body.append(renderMarkdown(this.task.result, "md tx-assistant"));
      if (this.task.error) this.body.append(h("div", { class: "tx-error-box" }, this.task.error));
      this.body.append(h("button", { class: "btn btn-small btn-ghost", onclick: (e) => {
        e.target.remove();
        replace(this.body);
        this.attach();
        this.loadOutput();
      } }, "Show tool calls and details"));
      this.staticFooter();
    }

    staticFooter() {
      if (this.body.querySelector(".tx-footer")) return;
      const status = this.task.status;
      this.body.append(h("div", { class: ["tx-footer", `tx-${status}`], testid: "reply-footer", dataset: { status } },
        h("span", { class: ["badge", `badge-${status}`] }, status),
        h("span", { class: "tx-cost", testid: "reply-cost" }, costLine(this.task))));
    }

    ended() {
      this.waiting.hidden = true;
      this.refreshControls();
      refreshSessions();
    }

    refreshControls() {
      const status = this.task.status || "queued";
      setBadge(this.statusBadge, status);
      this.stopBtn.hidden = !isActive(status);
      this.waiting.hidden = !isActive(status) || this.transcript.texts > 0;
      this.el.dataset.status = status;
    }

    async stop() {
      this.stopBtn.disabled = true;
      try {
        await api.post(`/api/tasks/${encodeURIComponent(this.task.task_id)}/stop`);
        toast("Stopping…");
      } catch (err) {
        toast(`Could not stop: ${err.message}`, "error");
      } finally {
        this.stopBtn.disabled = false;
      }
    }

    destroy() {
      this.unlisten?.();
    }
  }

  function addTurn(task, { detailed = true } = {}) {
    if (turns.has(task.task_id)) return turns.get(task.task_id);
    const turn = new Turn(task, { detailed });
    turns.set(task.task_id, turn);
    messages.querySelector(".empty")?.remove();
    messages.append(turn.el);
    return turn;
  }

  let stick = true;
  messages.addEventListener("scroll", () => {
    stick = messages.scrollHeight - messages.scrollTop - messages.clientHeight < 80;
  });
  function scrollDown() {
    if (stick) messages.scrollTop = messages.scrollHeight;
  }

  // --- a session's conversation -------------------------------------------------------------------------------
  function resetConversation() {
    releaseSub?.();
    releaseSub = null;
    for (const t of turns.values()) t.destroy();
    turns.clear();
    replace(messages);
  }

  async function openSession(id) {
    resetConversation();
    sessionId = id;
    for (const a of sessionList.querySelectorAll(".session-item")) a.classList.toggle("active", a.dataset.sessionId === id);
    root.classList.remove("show-sessions");
    if (!id) {
      title.textContent = "New session";
      sessionCost.textContent = "";
      messages.append(empty("Ask the Brain anything. It can plan work, delegate to agents and report back."));
      input.focus();
      return;
    }
    messages.append(loading());
    releaseSub = live.subscribe({ kind: "session", id });
    let detail;
    try {
      detail = sessionDetail(await api.get(`/api/sessions/${encodeURIComponent(id)}`));
    } catch (err) {
      if (sessionId !== id || destroyed) return;
      replace(messages, errorBox(err, "session-error"));
      return;
    }
    if (sessionId !== id || destroyed) return;
    messages.querySelector(".loading")?.remove();
    showSessionHead(detail.session);
    const ordered = detail.tasks.slice().sort((a, b) =>
      (parseTime(a.created_at)?.getTime() || 0) - (parseTime(b.created_at)?.getTime() || 0));
    const newest = new Set(ordered.slice(-DETAILED_TASKS).map((t) => t.task_id));
    const loads = [];
    for (const task of ordered) {
      const turn = addTurn(task, { detailed: newest.has(task.task_id) || isActive(task.status) });
      if (turn.detailed) loads.push(turn.loadOutput());
    }
    if (!ordered.length) messages.append(empty("No messages in this session yet."));
    await Promise.all(loads);
    stick = true;
    scrollDown();
  }

  // A task of this session we have not seen (sent from elsewhere): show it.
  const offAny = streams.onAny(async (event) => {
    if (!sessionId || event.session_id !== sessionId || turns.has(event.task_id)) return;
    const turn = addTurn({ task_id: event.task_id, session_id: event.session_id, status: "queued", prompt: "…" });
    try {
      const { task } = unwrapTask(await api.get(`/api/tasks/${encodeURIComponent(event.task_id)}`));
      if (task?.prompt) turn.el.querySelector(".bubble-user").textContent = task.prompt;
      await turn.loadOutput();
    } catch {
      /* the stream still shows it */
    }
    refreshSessions();
  });

  async function submit() {
    const message = input.value.trim();
    if (!message || send.disabled) return;
    send.disabled = true;
    try {
      const body = sessionId ? { message, session_id: sessionId } : { message };
      const accepted = await api.post("/api/chat", body);
      input.value = "";
      const newSession = !sessionId;
      if (newSession) {
        sessionId = accepted.session_id;
        replace(messages);
        title.textContent = message.length > 60 ? `${message.slice(0, 59)}…` : message;
        releaseSub = live.subscribe({ kind: "session", id: sessionId });
        history.replaceState(null, "", `#/chat/${encodeURIComponent(sessionId)}`);
      }
      addTurn({ task_id: accepted.task_id, session_id: accepted.session_id, status: "queued", prompt: message, agent: "brain" });
      stick = true;
      scrollDown();
      refreshSessions();
    } catch (err) {
      toast(`Not sent: ${err.message}`, "error");
    } finally {
      send.disabled = false;
      input.focus();
    }
  }

  // Without the socket, active replies are followed by polling their task (the socket's replay catches up later).
  const poll = setInterval(() => {
    if (live.state === "online") return;
    for (const turn of turns.values()) if (isActive(turn.task.status)) turn.loadOutput();
  }, 5000);

  loadSessions();
  openSession(sessionId);

  return {
    el: root,
    update(next) {
      if ((next.id || null) !== sessionId) openSession(next.id || null);
      return true;
    },
    destroy() {
      destroyed = true;
      clearInterval(poll);
      offAny();
      refreshSessions.cancel();
      resetConversation();
    },
  };
}
