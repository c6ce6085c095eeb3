import { test } from "node:test";
import assert from "node:assert/strict";
import { money, duration, sourceLabel, statusOfEvent } from "../js/format.js";

test("money shows small amounts with four decimals", () => {
  assert.equal(money(0.00846), "$0.0085");
  assert.equal(money(0), "$0.00");
  assert.equal(money(3), "$3.00");
  assert.equal(money("x"), "—");
});

test("duration", () => {
  assert.equal(duration(450), "450 ms");
  assert.equal(duration(1234), "1.2 s");
  assert.equal(duration(61000), "1 min 1 s");
  assert.equal(duration(3 * 3600 * 1000 + 60000), "3 h 1 min");
});

test("source labels name the webhook", () => {
  assert.equal(sourceLabel({ source: "github" }), "GitHub");
  assert.equal(sourceLabel({ source: "webhook", source_name: "deploys" }), "webhook: deploys");
  assert.equal(statusOfEvent("task.stopped"), "stopped");
});
