// Agents, skills and webhooks: list, create, edit, delete through the registry API.
import { h, replace, toast } from "../dom.js";
import { listOf, ApiError } from "../api.js";
import { ago } from "../format.js";
import { errorBox, loading, empty, pageHeader } from "./common.js";

const PERMISSION_MODES = ["dontAsk", "default", "acceptEdits", "plan", "bypassPermissions"];

const KINDS = {
  agents: {
    title: "Agents",
    singular: "agent",
    intro: "Agents are Claude Code configurations: instructions, tools and limits. Built-in agents can be tuned but not deleted.",
    fields: [
      { name: "name", label: "Name", type: "name", required: true },
      { name: "description", label: "Description", type: "text" },
      { name: "instructions", label: "Instructions", type: "textarea", rows: 8 },
      { name: "allowed_tools", label: "Allowed tools", type: "list", hint: "Permission rules, one per line or comma-separated: Read, Edit, Bash(git *)" },
      { name: "disallowed_tools", label: "Disallowed tools", type: "list" },
      { name: "permission_mode", label: "Permission mode", type: "select", options: PERMISSION_MODES },
      { name: "model", label: "Model", type: "text", hint: "Empty: the machine's default" },
      { name: "max_turns", label: "Max turns", type: "number", min: 1, max: 500, step: 1 },
      { name: "max_budget_usd", label: "Budget per task (USD)", type: "number", min: 0, step: 0.01 },
      { name: "long_running", label: "Long-running (runs on Fargate)", type: "checkbox" },
    ],
    summary: (a) => [a.permission_mode, a.model, a.max_turns && `${a.max_turns} turns`,
      a.allowed_tools?.length && `tools: ${a.allowed_tools.join(", ")}`].filter(Boolean).join(" · "),
  },
  skills: {
    title: "Skills",
    singular: "skill",
    intro: "Skills are SKILL.md files the CLI loads when relevant. Limit one to some agents, or leave agents empty for all.",
    fields: [
      { name: "name", label: "Name", type: "name", required: true },
      { name: "description", label: "Description", type: "text", hint: "When to use it: the CLI decides from this line" },
      { name: "content", label: "Content (Markdown)", type: "textarea", rows: 12 },
      { name: "agents", label: "Agents", type: "list", hint: "Empty: every agent" },
    ],
    summary: (s) => (s.agents?.length ? `agents: ${s.agents.join(", ")}` : "all agents"),
  },
  webhooks: {
    title: "Webhooks",
    singular: "webhook",
    intro: "Named endpoints at /webhooks/<name>: a JSON payload, signed with the secret, fills the prompt template for the target agent.",
    fields: [
      { name: "name", label: "Name", type: "name", required: true },
      { name: "description", label: "Description", type: "text" },
      { name: "agent", label: "Target agent", type: "text" },
      { name: "prompt_template", label: "Prompt template", type: "textarea", rows: 5, hint: "{payload} is the whole payload; {field.path} picks a value" },
      { name: "filter", label: "Filter", type: "text", hint: "e.g. $.action == 'opened'" },
      { name: "secret", label: "HMAC secret", type: "password", hint: "Write-only. Leave empty when editing to keep the current one." },
      { name: "signature_header", label: "Signature header", type: "text" },
      { name: "enabled", label: "Enabled", type: "checkbox" },
    ],
    summary: (w) => [w.agent && `→ ${w.agent}`, w.filter && `filter ${w.filter}`, w.enabled === false && "disabled"].filter(Boolean).join(" · "),
  },
};

const DEFAULTS = {
  agents: { permission_mode: "dontAsk", max_turns: 30 },
  skills: {},
  webhooks: { agent: "planning", prompt_template: "A webhook event arrived:\n{payload}", signature_header: "X-Signature-256", enabled: true },
};

function splitList(text) {
  return text.split(/[\n,]/).map((s) => s.trim()).filter(Boolean);
}

export function registryView(ctx, params) {
  const { api } = ctx;
  const kind = params.kind;
  const spec = KINDS[kind];
  let destroyed = false;
  let items = [];

  const list = h("div", { class: "registry-list", testid: "registry-list" }, loading());
  const formHost = h("div", { testid: "registry-form-host" });
  const el = h("div", { class: "page", testid: `${kind}-view` },
    pageHeader(spec.title, h("button", { class: "btn btn-primary", testid: "registry-new", onclick: () => openForm(null) }, `New ${spec.singular}`)),
    h("p", { class: "muted" }, spec.intro), formHost, list);

  async function load() {
    try {
      items = listOf(await api.get(`/api/${kind}`), kind);
      if (destroyed) return;
      items.sort((a, b) => String(a.name).localeCompare(String(b.name)));
      replace(list, items.length ? items.map(card) : empty(`No ${kind} yet.`));
    } catch (err) {
      if (!destroyed) replace(list, errorBox(err));
    }
  }

  function endpoint(item) {
    const base = api.base || location.origin;
    return `${base}${item.path || `/webhooks/${item.name}`}`;
  }

  function card(item) {
    // Built-in agents can be edited and reset to their default; other built-ins are fixed.
    const resettable = item.builtin && kind === "agents";
    const label = resettable ? "Reset" : "Delete";
    const del = h("button", { class: "btn btn-small btn-ghost btn-danger-text", testid: resettable ? "registry-reset" : "registry-delete",
      hidden: item.builtin && !resettable,
      onclick: () => {
        if (del.dataset.armed) remove(item.name, resettable);
        else {
          del.dataset.armed = "1";
          del.textContent = resettable ? "Confirm reset" : "Confirm delete";
          setTimeout(() => { if (del.isConnected) { delete del.dataset.armed; del.textContent = label; } }, 4000);
        }
      } }, label);
    const editable = !(kind === "webhooks" && item.builtin);
    return h("article", { class: "registry-item card", testid: "registry-item", dataset: { name: item.name } },
      h("div", { class: "registry-head" },
        h("h3", {}, item.name, item.builtin ? h("span", { class: "chip" }, "built-in") : null,
          item.enabled === false ? h("span", { class: "chip chip-off" }, "disabled") : null),
        h("div", { class: "registry-actions" },
          editable ? h("button", { class: "btn btn-small", testid: "registry-edit", onclick: () => openForm(item) }, "Edit") : null, del)),
      item.description ? h("p", {}, item.description) : null,
      h("p", { class: "muted small" }, spec.summary(item) || ""),
      kind === "webhooks" ? h("div", {}, h("code", { class: "endpoint", testid: "webhook-url" }, endpoint(item)),
        item.has_secret ? h("span", { class: "chip" }, "signed") : null) : null,
      item.updated_at ? h("p", { class: "muted small" }, `updated ${ago(item.updated_at)}${item.updated_by ? ` by ${item.updated_by}` : ""}`) : null);
  }

  function input(field, value, editing) {
    const common = { id: `f-${field.name}`, name: field.name, testid: `field-${field.name}` };
    switch (field.type) {
      case "textarea":
        return h("textarea", { ...common, rows: field.rows || 4, value: value ?? "" });
      case "list":
        return h("textarea", { ...common, rows: 2, value: Array.isArray(value) ? value.join("\n") : (value ?? "") });
      case "select":
        return h("select", common, field.options.map((o) => h("option", { value: o, selected: o === value }, o)));
      case "checkbox":
        return h("input", { ...common, type: "checkbox", checked: Boolean(value) });
      case "number":
        return h("input", { ...common, type: "number", min: field.min, max: field.max, step: field.step, value: value ?? "" });
      case "password":
        return h("input", { ...common, type: "password", autocomplete: "new-password", placeholder: editing ? "unchanged" : "" });
      case "name":
        return h("input", { ...common, type: "text", required: true, pattern: "[a-z0-9][a-z0-9_\\-]{0,62}", readonly: editing,
          autocapitalize: "off", spellcheck: "false", value: value ?? "", title: "lowercase letters, digits, - and _" });
      default:
        return h("input", { ...common, type: "text", value: value ?? "" });
    }
  }

  function readForm(form, editing) {
    const body = {};
    for (const field of spec.fields) {
      const el = form.elements[field.name];
      if (!el) continue;
      if (field.type === "checkbox") body[field.name] = el.checked;
      else if (field.type === "list") body[field.name] = splitList(el.value);
      else if (field.type === "number") {
        if (el.value !== "") body[field.name] = Number(el.value);
        else if (field.name !== "max_turns") body[field.name] = null;
      } else if (field.type === "password") {
        if (el.value) body[field.name] = el.value;
      } else if (field.name === "model" || field.name === "filter") {
        body[field.name] = el.value.trim() || null;
      } else body[field.name] = field.type === "textarea" ? el.value : el.value.trim();
    }
    if (editing && body.secret === undefined) delete body.secret;
    return body;
  }

  function openForm(item) {
    const editing = Boolean(item);
    const values = { ...DEFAULTS[kind], ...(item || {}) };
    const error = h("div", { class: "form-error", testid: "registry-error", role: "alert" });
    const save = h("button", { type: "submit", class: "btn btn-primary", testid: "registry-save" }, editing ? "Save" : "Create");
    const form = h("form", { class: "card registry-form", testid: "registry-form", novalidate: false,
      onsubmit: async (e) => {
        e.preventDefault();
        error.textContent = "";
        save.disabled = true;
        try {
          await submit(readForm(form, editing), editing ? item.name : null);
          toast(`${spec.singular[0].toUpperCase()}${spec.singular.slice(1)} ${editing ? "saved" : "created"}.`);
          replace(formHost);
          await load();
        } catch (err) {
          error.textContent = err.message;
        } finally {
          save.disabled = false;
        }
      } },
    h("h2", {}, editing ? `Edit ${spec.singular} ${item.name}` : `New ${spec.singular}`),
    spec.fields.map((field) => {
      const control = input(field, values[field.name], editing);
      if (field.type === "checkbox") {
        return h("div", { class: "field field-check" }, control, h("label", { for: control.id }, field.label));
      }
      return h("div", { class: "field" }, h("label", { for: control.id }, field.label), control,
        field.hint ? h("div", { class: "hint" }, field.hint) : null);
    }),
    error,
    h("div", { class: "form-actions" }, save,
      h("button", { type: "button", class: "btn btn-ghost", testid: "registry-cancel", onclick: () => replace(formHost) }, "Cancel")));
    replace(formHost, form);
    form.querySelector(editing ? "input:not([readonly]), textarea" : "input")?.focus();
    form.scrollIntoView({ block: "nearest" });
  }

  async function submit(body, existing) {
    if (!existing) return api.post(`/api/${kind}`, body);
    try {
      return await api.put(`/api/${kind}/${encodeURIComponent(existing)}`, body);
    } catch (err) {
      // Registries without PUT take a POST of the whole record (an upsert).
      if (err instanceof ApiError && err.status === 405) return api.post(`/api/${kind}`, body);
      throw err;
    }
  }

  async function remove(name, reset = false) {
    try {
      await api.del(`/api/${kind}/${encodeURIComponent(name)}`);
      toast(reset ? `Reset ${name} to its default.` : `Deleted ${name}.`);
      await load();
    } catch (err) {
      toast(`Could not delete ${name}: ${err.message}`, "error");
    }
  }

  load();
  return { el, destroy() { destroyed = true; } };
}
