// Client-side store of task events. Events arrive from three places (REST output, WebSocket replay, live
// pushes) possibly out of order and twice: each task's stream dedupes by seq and releases events strictly in
// order. A hole that does not fill by itself (events the server pushed before we subscribed and had not stored
// yet) triggers a re-subscribe with last_seq; after a few tries the hole is skipped.

const GAP_RETRY_MS = [1200, 2500, 5000];

export class TaskStream {
  constructor(taskId, sessionId, onGap) {
    this.taskId = taskId;
    this.sessionId = sessionId;
    this.released = 0; // every seq <= released has been delivered (or given up on)
    this.pending = new Map(); // seq -> event, waiting for the hole before it to fill
    this.seen = new Set();
    this.listeners = new Set();
    this.log = []; // released events, in order, for renderers that attach later
    this.onGap = onGap;
    this.gapTries = 0;
    this.gapTimer = null;
  }

  /** Returns true when the event was new. */
  add(event) {
    const seq = Number(event.seq);
    if (!Number.isFinite(seq) || seq <= this.released || this.pending.has(seq)) return false;
    if (!this.sessionId && event.session_id) this.sessionId = event.session_id;
    this.pending.set(seq, event);
    this.#drain();
    return true;
  }

  addAll(events) {
    for (const e of [...events].sort((a, b) => a.seq - b.seq)) this.add(e);
  }

  /** The server confirmed a (re)subscribe: whatever it replayed has arrived. */
  confirmed() {
    this.#drain();
    if (this.pending.size && this.gapTries >= GAP_RETRY_MS.length) this.#skipHole();
  }

  #drain() {
    while (this.pending.has(this.released + 1)) {
      const seq = this.released + 1;
      const event = this.pending.get(seq);
      this.pending.delete(seq);
      this.released = seq;
      this.#emit(event);
    }
    if (this.pending.size) {
      this.#armGapTimer();
    } else {
      clearTimeout(this.gapTimer);
      this.gapTimer = null;
      this.gapTries = 0;
    }
  }

  #armGapTimer() {
    if (this.gapTimer) return;
    const delay = GAP_RETRY_MS[Math.min(this.gapTries, GAP_RETRY_MS.length - 1)];
    this.gapTimer = setTimeout(() => {
      this.gapTimer = null;
      if (!this.pending.size) return;
      if (this.gapTries < GAP_RETRY_MS.length) {
        this.gapTries += 1;
        this.onGap?.(this);
        this.#armGapTimer();
      } else {
        this.#skipHole();
      }
    }, delay);
  }

  #skipHole() {
    const first = Math.min(...this.pending.keys());
    this.released = first - 1;
    this.gapTries = 0;
    this.#drain();
  }

  #emit(event) {
    this.log.push(event);
    for (const fn of this.listeners) {
      try {
        fn(event);
      } catch (err) {
        console.error("event listener failed", err);
      }
    }
  }

  /** Call fn for every released event (past ones first). Returns an unsubscribe function. */
  listen(fn, { replay = true } = {}) {
    if (replay) for (const e of this.log) fn(e);
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  dispose() {
    clearTimeout(this.gapTimer);
    this.listeners.clear();
  }
}

export class Streams {
  constructor() {
    this.tasks = new Map(); // task_id -> TaskStream
    this.trackedSessions = new Map(); // session_id -> refcount
    this.trackedTasks = new Map(); // task_id -> refcount
    this.globalListeners = new Set();
    this.recent = new Set(); // "task:seq" keys already announced to global listeners
    this.onGap = null; // set by the live socket: (stream) => re-subscribe
  }

  stream(taskId, sessionId) {
    let s = this.tasks.get(taskId);
    if (!s) {
      s = new TaskStream(taskId, sessionId, (st) => this.onGap?.(st));
      this.tasks.set(taskId, s);
    }
    return s;
  }

  /** Every event that arrives (from any source), new or not, for lists and badges. */
  onAny(fn) {
    this.globalListeners.add(fn);
    return () => this.globalListeners.delete(fn);
  }

  ingest(event) {
    if (!event || !event.task_id) return;
    const key = `${event.task_id}:${event.seq}`;
    if (!this.recent.has(key)) {
      this.recent.add(key);
      if (this.recent.size > 5000) this.recent.delete(this.recent.values().next().value);
      for (const fn of this.globalListeners) {
        try {
          fn(event);
        } catch (err) {
          console.error("event listener failed", err);
        }
      }
    }
    const wanted = this.tasks.has(event.task_id) || this.trackedTasks.has(event.task_id)
      || this.trackedSessions.has(event.session_id);
    if (wanted) this.stream(event.task_id, event.session_id).add(event);
  }

  track(kind, id) {
    const map = kind === "session" ? this.trackedSessions : this.trackedTasks;
    map.set(id, (map.get(id) || 0) + 1);
    return () => {
      const n = (map.get(id) || 1) - 1;
      if (n > 0) map.set(id, n);
      else {
        map.delete(id);
        this.#prune();
      }
    };
  }

  #prune() {
    for (const [taskId, s] of this.tasks) {
      if (!this.trackedTasks.has(taskId) && !this.trackedSessions.has(s.sessionId)) {
        s.dispose();
        this.tasks.delete(taskId);
      }
    }
  }

  /**
   * last_seq map for a session subscribe: every stream of the session we hold (the newest `max`), 0 included,
   * since the server replays finished tasks only when they are named.
   */
  lastSeqForSession(sessionId, max = 150) {
    const out = {};
    const mine = [...this.tasks.values()].filter((s) => s.sessionId === sessionId);
    for (const s of mine.slice(-max)) out[s.taskId] = s.released;
    return out;
  }
}
