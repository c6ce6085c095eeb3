// Unit tests of the client-side event store (node --test; no browser needed).
import { test } from "node:test";
import assert from "node:assert/strict";
import { Streams, TaskStream } from "../js/streams.js";

const ev = (seq, type = "task.output", task = "t1", session = "s1") => ({ type, task_id: task, session_id: session, seq, ts: "", payload: {} });

test("events are released in order, once, whatever order they arrive in", () => {
  const s = new TaskStream("t1", "s1");
  const got = [];
  s.listen((e) => got.push(e.seq));
  for (const seq of [1, 3, 2, 2, 1, 5, 4, 3]) s.add(ev(seq));
  assert.deepEqual(got, [1, 2, 3, 4, 5]);
  assert.equal(s.released, 5);
  s.dispose();
});

test("a late listener gets the past events first", () => {
  const s = new TaskStream("t1", "s1");
  s.addAll([ev(2), ev(1)]);
  const got = [];
  s.listen((e) => got.push(e.seq));
  s.add(ev(3));
  assert.deepEqual(got, [1, 2, 3]);
  s.dispose();
});

test("a hole asks for a re-subscribe, and is skipped when it never fills", async (t) => {
  t.mock.timers.enable({ apis: ["setTimeout"] });
  const gaps = [];
  const s = new TaskStream("t1", "s1", (stream) => gaps.push(stream.released));
  const got = [];
  s.listen((e) => got.push(e.seq));
  s.add(ev(1));
  s.add(ev(4));
  assert.deepEqual(got, [1]);
  t.mock.timers.tick(1200);
  assert.deepEqual(gaps, [1]); // re-subscribe with last_seq = 1
  s.add(ev(2)); // the replay brings part of the hole
  assert.deepEqual(got, [1, 2]);
  t.mock.timers.tick(2500);
  t.mock.timers.tick(5000);
  assert.equal(gaps.length, 3);
  t.mock.timers.tick(5000); // out of tries: move on past the hole
  assert.deepEqual(got, [1, 2, 4]);
  s.dispose();
});

test("a confirmed subscribe that did not fill the hole after the retries skips it", (t) => {
  t.mock.timers.enable({ apis: ["setTimeout"] });
  const s = new TaskStream("t1", "s1", () => {});
  const got = [];
  s.listen((e) => got.push(e.seq));
  s.add(ev(2));
  t.mock.timers.tick(1200);
  t.mock.timers.tick(2500);
  t.mock.timers.tick(5000);
  s.confirmed();
  assert.deepEqual(got, [2]);
  s.dispose();
});

test("Streams collects the tasks of tracked sessions and tasks only, and tells every listener once", () => {
  const streams = new Streams();
  const seen = [];
  streams.onAny((e) => seen.push(`${e.task_id}:${e.seq}`));
  const untrack = streams.track("session", "s1");
  streams.ingest(ev(1, "task.started", "a", "s1"));
  streams.ingest(ev(1, "task.started", "a", "s1"));
  streams.ingest(ev(1, "task.started", "b", "s2"));
  assert.deepEqual(seen, ["a:1", "b:1"]);
  assert.ok(streams.tasks.has("a"));
  assert.ok(!streams.tasks.has("b"));
  streams.stream("c", "s1"); // a task of the session shown before any of its events arrived
  assert.deepEqual(streams.lastSeqForSession("s1"), { a: 1, c: 0 });
  untrack();
  assert.equal(streams.tasks.size, 0);
});
