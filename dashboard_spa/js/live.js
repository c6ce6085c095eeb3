// The WebSocket: connects with the token in the query string, keeps the subscriptions the views ask for, and
// after every (re)connect subscribes again with the last sequence number held per task, so the server replays
// what was missed. Reconnects by itself with backoff; reports its state ("connecting" | "online" | "offline").

const PING_EVERY_MS = 4 * 60 * 1000; // API Gateway closes idle connections after 10 minutes
const PONG_TIMEOUT_MS = 20 * 1000;
const MAX_BACKOFF_MS = 15 * 1000;
const SUBSCRIBE_TIMEOUT_MS = 6 * 1000; // no answer to a subscribe: the connection is broken, open a new one
// (the watchdog restarts with every replayed frame of that subscription, so a big replay never trips it)
const SETTLE_MS = 2500; // after a subscribe, check once more: pushes in the meantime may have gone to a stale list
const BEHIND_RETRY_MS = 1200; // the server knows of events we do not hold: ask again
const MAX_FOLLOW_UPS = 4; // follow-up subscribes per subscription, until the next (re)connect
const TERMINAL = new Set(["completed", "failed", "stopped", "timed_out"]);

export class LiveSocket extends EventTarget {
  /**
   * @param {string} url  the WebSocket URL without the token
   * @param {() => string|null} getToken
   * @param {import("./streams.js").Streams} streams
   */
  constructor(url, getToken, streams) {
    super();
    this.url = url;
    this.getToken = getToken;
    this.streams = streams;
    this.ws = null;
    this.state = "connecting";
    this.subs = new Map(); // key -> {spec, refs}
    this.parts = new Map(); // "task:seq" -> {parts: [], got: n}
    this.attempt = 0;
    this.stopped = true;
    this.timers = {};
    this.nextId = 1;
    this.waiting = new Map(); // request id -> {resolve, reject, timer}
    this.unanswered = new Map(); // subscription key -> watchdog timer
    this.followUps = new Map(); // subscription key -> {count, timer}: re-subscribes after a confirmation
    streams.onGap = (stream) => this.resync(stream);
    this.onOnline = () => this.#reconnectNow();
    this.onVisible = () => document.visibilityState === "visible" && this.#reconnectNow();
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    window.addEventListener("online", this.onOnline);
    document.addEventListener("visibilitychange", this.onVisible);
    this.#open();
  }

  stop() {
    this.stopped = true;
    window.removeEventListener("online", this.onOnline);
    document.removeEventListener("visibilitychange", this.onVisible);
    for (const t of Object.values(this.timers)) clearTimeout(t);
    if (this.ws) {
      this.ws.onclose = null;
      this.ws.close();
      this.ws = null;
    }
    this.#setState("offline");
  }

  #setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: state }));
  }

  #reconnectNow() {
    if (this.stopped || (this.ws && this.ws.readyState <= WebSocket.OPEN)) return;
    clearTimeout(this.timers.reconnect);
    this.attempt = 0;
    this.#open();
  }

  #open() {
    const token = this.getToken();
    if (!token) return;
    // The first connection shows "connecting"; later attempts keep "offline" until one opens.
    if (this.state !== "offline") this.#setState("connecting");
    const sep = this.url.includes("?") ? "&" : "?";
    let ws;
    try {
      ws = new WebSocket(`${this.url}${sep}token=${encodeURIComponent(token)}`);
    } catch (err) {
      console.warn("websocket could not be created", err);
      this.#scheduleReconnect();
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      this.attempt = 0;
      this.#setState("online");
      for (const key of this.subs.keys()) this.#sendSubscribe(key);
      this.#armPing();
    };
    ws.onmessage = (msg) => this.#onMessage(msg.data);
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      clearTimeout(this.timers.ping);
      clearTimeout(this.timers.pong);
      this.parts.clear();
      for (const timer of this.unanswered.values()) clearTimeout(timer);
      this.unanswered.clear();
      for (const f of this.followUps.values()) clearTimeout(f.timer);
      this.followUps.clear();
      for (const [, w] of this.waiting) w.reject(new Error("connection closed"));
      this.waiting.clear();
      this.#setState("offline");
      this.#scheduleReconnect();
    };
    ws.onerror = () => {}; // onclose follows
  }

  #scheduleReconnect() {
    if (this.stopped) return;
    const base = Math.min(MAX_BACKOFF_MS, 500 * 2 ** this.attempt);
    this.attempt += 1;
    const delay = base / 2 + Math.random() * (base / 2);
    clearTimeout(this.timers.reconnect);
    this.timers.reconnect = setTimeout(() => this.#open(), delay);
  }

  #armPing() {
    clearTimeout(this.timers.ping);
    this.timers.ping = setTimeout(() => {
      if (!this.send({ action: "ping" })) return;
      this.timers.pong = setTimeout(() => this.ws?.close(), PONG_TIMEOUT_MS);
    }, PING_EVERY_MS);
  }

  send(message) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(message));
    return true;
  }

  /** Send and wait for the reply carrying the same id. */
  request(message, timeoutMs = 15000) {
    const id = `r${this.nextId++}`;
    return new Promise((resolve, reject) => {
      if (!this.send({ ...message, id })) {
        reject(new Error("not connected"));
        return;
      }
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        reject(new Error("no answer"));
      }, timeoutMs);
      this.waiting.set(id, { resolve, reject, timer });
    });
  }

  #onMessage(raw) {
    let msg;
    try {
      msg = JSON.parse(raw);
    } catch {
      return;
    }
    clearTimeout(this.timers.pong);
    this.#armPing();
    switch (msg.type) {
      case "events":
        for (const event of msg.events || []) {
          this.#progress(event);
          this.streams.ingest(event);
        }
        break;
      case "event_part":
        this.#progress(msg);
        this.#joinPart(msg);
        break;
      case "subscribed":
        this.#confirmed(msg);
        break;
      case "pong":
        break;
      case "error":
        console.warn("websocket error message:", msg.message);
        break;
      default:
        break;
    }
    if (typeof msg.id === "string" && msg.id.startsWith("sub:")) {
      const key = msg.id.slice(4);
      clearTimeout(this.unanswered.get(key));
      this.unanswered.delete(key);
    }
    if (msg.id && this.waiting.has(msg.id)) {
      const w = this.waiting.get(msg.id);
      this.waiting.delete(msg.id);
      clearTimeout(w.timer);
      if (msg.type === "error") w.reject(new Error(msg.message));
      else w.resolve(msg);
    }
    this.dispatchEvent(new CustomEvent("message", { detail: msg }));
  }

  #joinPart(msg) {
    const key = `${msg.task_id}:${msg.seq}`;
    let entry = this.parts.get(key);
    if (!entry) {
      entry = { parts: new Array(msg.parts), got: 0 };
      this.parts.set(key, entry);
    }
    if (entry.parts[msg.part] === undefined) {
      entry.parts[msg.part] = msg.data;
      entry.got += 1;
    }
    if (entry.got === msg.parts) {
      this.parts.delete(key);
      try {
        this.streams.ingest(JSON.parse(entry.parts.join("")));
      } catch (err) {
        console.warn("could not join event parts", err);
      }
    }
  }

  /** A replayed or live frame of a subscription that is still unanswered: it is alive, restart its watchdog. */
  #progress(item) {
    for (const key of [`task:${item.task_id}`, `session:${item.session_id}`]) {
      if (this.unanswered.has(key)) this.#armWatchdog(key);
    }
  }

  #confirmed(msg) {
    if (msg.task_id) this.streams.tasks.get(msg.task_id)?.confirmed();
    if (msg.session_id && !msg.task_id) {
      for (const s of this.streams.tasks.values()) if (s.sessionId === msg.session_id) s.confirmed();
    }
    const key = msg.task_id ? `task:${msg.task_id}` : msg.session_id ? `session:${msg.session_id}` : null;
    if (key && this.subs.has(key)) this.#followUp(key, msg);
  }

  /** A task's stream holds everything: the task is terminal and we hold its last seq (its terminal event). */
  #complete(taskId, status, knownLast) {
    const released = this.streams.tasks.get(taskId)?.released || 0;
    return TERMINAL.has(status) && released >= Number(knownLast);
  }

  /**
   * After a confirmation: a subscriber that arrives near a task's end can miss its tail for good (the runner
   * pushes to a subscriber list it caches briefly). Subscribe again with last_seq when the server knows of
   * events we do not hold (soon), and once more after a short while when a watched task has not ended in our
   * stream (the replay of that subscribe brings whatever was stored meanwhile). Bounded per connection.
   */
  #followUp(key, msg) {
    const prev = this.followUps.get(key) || { count: 0, timer: null };
    clearTimeout(prev.timer);
    const entries = msg.task_id
      ? [[msg.task_id, msg.status, msg.task_last_seq ?? msg.last_seq]]
      : Object.entries(msg.tasks || {}).map(([t, status]) => [t, status, (msg.task_last_seq || {})[t] ?? 0]);
    let delay = null;
    for (const [taskId, status, knownLast] of entries) {
      const s = this.streams.tasks.get(taskId);
      const released = s ? s.released : 0;
      if (Number(knownLast) > released) delay = BEHIND_RETRY_MS;
      else if (!this.#complete(taskId, status, knownLast) && delay === null) delay = SETTLE_MS;
    }
    if (delay === null || prev.count >= MAX_FOLLOW_UPS || (delay === SETTLE_MS && prev.settled)) {
      this.followUps.set(key, { ...prev, timer: null });
      return;
    }
    const entry = { count: prev.count + 1, settled: prev.settled || delay === SETTLE_MS, timer: null };
    entry.timer = setTimeout(() => {
      entry.timer = null;
      if (this.subs.has(key)) this.#sendSubscribe(key, { followUp: true });
    }, delay);
    this.followUps.set(key, entry);
  }

  #message(key) {
    const sub = this.subs.get(key);
    if (!sub) return null;
    const { kind, id } = sub.spec;
    if (kind === "all") return { action: "subscribe", topic: "all" };
    if (kind === "task") {
      return { action: "subscribe", task_id: id, last_seq: this.streams.tasks.get(id)?.released || 0 };
    }
    return { action: "subscribe", session_id: id, last_seq: this.streams.lastSeqForSession(id) };
  }

  #sendSubscribe(key, { followUp = false } = {}) {
    const message = this.#message(key);
    if (!message || !this.send({ ...message, id: `sub:${key}` })) return;
    if (!followUp) {
      clearTimeout(this.followUps.get(key)?.timer);
      this.followUps.delete(key);
    }
    this.#armWatchdog(key);
  }

  // Every subscribe is answered ("subscribed" or "error"). Silence means replies cannot reach us on this
  // connection: drop it and connect again (the next subscribe replays whatever was missed).
  #armWatchdog(key) {
    clearTimeout(this.unanswered.get(key));
    const ws = this.ws;
    this.unanswered.set(key, setTimeout(() => {
      this.unanswered.delete(key);
      if (this.ws === ws && ws?.readyState === WebSocket.OPEN) {
        console.warn("no answer to a subscribe: reconnecting");
        ws.close();
      }
    }, SUBSCRIBE_TIMEOUT_MS));
  }

  /**
   * Keep a subscription while the caller needs it: {kind: "session"|"task"|"all", id}. Returns a release function.
   * Events of a subscribed session or task are collected in `streams`.
   */
  subscribe(spec) {
    const key = spec.kind === "all" ? "all" : `${spec.kind}:${spec.id}`;
    const untrack = spec.kind === "all" ? () => {} : this.streams.track(spec.kind, spec.id);
    const existing = this.subs.get(key);
    if (existing) existing.refs += 1;
    else {
      this.subs.set(key, { spec, refs: 1 });
      this.#sendSubscribe(key);
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      untrack();
      const sub = this.subs.get(key);
      if (!sub) return;
      sub.refs -= 1;
      if (sub.refs <= 0) {
        this.subs.delete(key);
        clearTimeout(this.unanswered.get(key));
        this.unanswered.delete(key);
        clearTimeout(this.followUps.get(key)?.timer);
        this.followUps.delete(key);
        const { kind, id } = spec;
        this.send(kind === "all" ? { action: "unsubscribe", topic: "all" }
          : { action: "unsubscribe", [kind === "task" ? "task_id" : "session_id"]: id });
      }
    };
  }

  /** A stream has a hole: subscribe again (with last_seq) through whichever subscription covers it. */
  resync(stream) {
    const taskKey = `task:${stream.taskId}`;
    const sessionKey = `session:${stream.sessionId}`;
    if (this.subs.has(taskKey)) this.#sendSubscribe(taskKey);
    else if (this.subs.has(sessionKey)) this.#sendSubscribe(sessionKey);
  }
}

/** The WebSocket URL from /api/config (absolute, or a path on this page's host). */
export function websocketUrl(configured) {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  if (!configured) return `${proto}//${location.host}/ws`;
  if (configured.startsWith("/")) return `${proto}//${location.host}${configured}`;
  if (configured.startsWith("http")) return configured.replace(/^http/, "ws");
  return configured;
}
