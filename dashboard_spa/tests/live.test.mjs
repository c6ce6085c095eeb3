// Unit tests of the live socket (node --test): a fake WebSocket stands in for the browser's.
import { test } from "node:test";
import assert from "node:assert/strict";

class FakeWebSocket {
  static CONNECTING = 0;
  static OPEN = 1;
  static CLOSING = 2;
  static CLOSED = 3;
  static last = null;
  constructor(url) {
    this.url = url;
    this.readyState = FakeWebSocket.OPEN;
    this.sent = [];
    FakeWebSocket.last = this;
  }
  send(data) {
    this.sent.push(JSON.parse(data));
  }
  close() {
    this.readyState = FakeWebSocket.CLOSED;
    this.onclose?.();
  }
  receive(obj) {
    this.onmessage?.({ data: typeof obj === "string" ? obj : JSON.stringify(obj) });
  }
  subscribes() {
    return this.sent.filter((m) => m.action === "subscribe");
  }
}
globalThis.WebSocket = FakeWebSocket;
globalThis.window = { addEventListener() {}, removeEventListener() {} };
globalThis.document = { addEventListener() {}, removeEventListener() {}, visibilityState: "visible" };

const { LiveSocket } = await import("../js/live.js");
const { Streams } = await import("../js/streams.js");

function open(t) {
  t.mock.timers.enable({ apis: ["setTimeout"] });
  const streams = new Streams();
  const live = new LiveSocket("ws://x/ws", () => "tok", streams);
  live.start();
  const ws = FakeWebSocket.last;
  ws.onopen();
  return { live, streams, ws };
}

const ev = (seq, type = "task.output", extra = {}) => ({
  type, task_id: "t1", session_id: "s1", seq, ts: "", payload: { kind: "text", text: `line ${seq}` }, ...extra,
});

// The server's _split: slices of the event's JSON text (here by code point, as Python slices, so an emoji is never
// cut in half; JS strings are UTF-16, which is why the join must happen before JSON.parse).
function parts(event, size) {
  const chars = [...JSON.stringify(event)];
  const out = [];
  for (let i = 0; i < chars.length; i += size) out.push(chars.slice(i, i + size).join(""));
  return out.map((data, i) => ({ type: "event_part", task_id: event.task_id, session_id: event.session_id,
    seq: event.seq, part: i, parts: out.length, data }));
}

test("event_part frames are joined into the exact event, in any order", (t) => {
  const { live, streams, ws } = open(t);
  const release = live.subscribe({ kind: "task", id: "t1" });
  const got = [];
  streams.stream("t1", "s1").listen((e) => got.push(e));
  const big = ev(1, "task.output", { payload: { kind: "text", text: "😀é\"\\\n".repeat(5000) } });
  const frames = parts(big, 997);
  for (const f of [...frames.slice(1).reverse(), frames[0]]) ws.receive(f);
  assert.equal(got.length, 1);
  assert.deepEqual(got[0], big);
  release();
  live.stop();
});

test("the subscribe watchdog restarts with every replayed frame of the subscription", (t) => {
  const { live, ws } = open(t);
  live.subscribe({ kind: "task", id: "t1" });
  const big = ev(1, "task.output", { payload: { kind: "text", text: "x".repeat(50000) } });
  const frames = parts(big, 1000);
  for (const f of frames) {
    t.mock.timers.tick(4000); // 50 frames x 4 s: far longer than the 6 s watchdog, but never silent for 6 s
    ws.receive(f);
  }
  assert.equal(ws.readyState, FakeWebSocket.OPEN);
  ws.receive({ type: "subscribed", id: "sub:task:t1", task_id: "t1", status: "running", last_seq: 1, task_last_seq: 1 });
  t.mock.timers.tick(7000);
  assert.equal(ws.readyState, FakeWebSocket.OPEN);
  live.stop();
});

test("silence after a subscribe still replaces the connection", (t) => {
  const { live, ws } = open(t);
  live.subscribe({ kind: "task", id: "t1" });
  t.mock.timers.tick(6100);
  assert.equal(ws.readyState, FakeWebSocket.CLOSED);
  live.stop();
});

test("a subscriber behind the server's last seq subscribes again with its last seq", (t) => {
  const { live, ws } = open(t);
  live.subscribe({ kind: "task", id: "t1" });
  ws.receive({ type: "events", events: [ev(1), ev(2)] });
  // the task is done and its tail (3..4) never reached us
  ws.receive({ type: "subscribed", id: "sub:task:t1", task_id: "t1", status: "completed", last_seq: 2, task_last_seq: 4 });
  assert.equal(ws.subscribes().length, 1);
  t.mock.timers.tick(1300);
  const again = ws.subscribes();
  assert.equal(again.length, 2);
  assert.equal(again[1].last_seq, 2);
  ws.receive({ type: "events", events: [ev(3), ev(4, "task.completed")] });
  ws.receive({ type: "subscribed", id: "sub:task:t1", task_id: "t1", status: "completed", last_seq: 4, task_last_seq: 4 });
  t.mock.timers.tick(10000);
  assert.equal(ws.subscribes().length, 2); // complete now: no more follow-ups
  live.stop();
});

test("a running task is checked once more shortly after the subscribe, then left to the live stream", (t) => {
  const { live, ws } = open(t);
  live.subscribe({ kind: "task", id: "t1" });
  ws.receive({ type: "subscribed", id: "sub:task:t1", task_id: "t1", status: "running", last_seq: 0, task_last_seq: 0 });
  t.mock.timers.tick(2600);
  assert.equal(ws.subscribes().length, 2);
  ws.receive({ type: "subscribed", id: "sub:task:t1", task_id: "t1", status: "running", last_seq: 0, task_last_seq: 0 });
  t.mock.timers.tick(30000);
  assert.equal(ws.subscribes().length, 2);
  live.stop();
});

test("follow-ups are bounded when the server keeps claiming events we never get", (t) => {
  const { live, ws } = open(t);
  live.subscribe({ kind: "session", id: "s1" });
  for (let i = 0; i < 10; i += 1) {
    ws.receive({ type: "subscribed", id: "sub:session:s1", session_id: "s1", last_seq: {}, tasks: { t1: "completed" },
      task_last_seq: { t1: 9 } });
    t.mock.timers.tick(3000);
  }
  assert.equal(ws.subscribes().length, 1 + 4);
  live.stop();
});
