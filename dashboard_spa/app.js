// The dashboard: sign-in, the shell (navigation, connection state), and hash routing to the views.
// Plain ES modules, no build step. It talks only to the REST API (bearer token) and the WebSocket.
import { h, replace, toast } from "./js/dom.js";
import { Api, ApiError } from "./js/api.js";
import { LiveSocket, websocketUrl } from "./js/live.js";
import { Streams } from "./js/streams.js";
import { chatView } from "./js/views/chat.js";
import { tasksView } from "./js/views/tasks.js";
import { taskView } from "./js/views/task.js";
import { costsView } from "./js/views/costs.js";
import { statusView } from "./js/views/status.js";
import { registryView } from "./js/views/registry.js";
import { signInView } from "./js/views/signin.js";

const TOKEN_KEY = "agentMachine.token";

const ROUTES = [
  { path: "chat", label: "Chat", view: chatView },
  { path: "tasks", label: "Tasks", view: (ctx, params) => (params.id ? taskView(ctx, params) : tasksView(ctx, params)) },
  { path: "costs", label: "Costs", view: costsView },
  { path: "status", label: "Status", view: statusView },
  { path: "agents", label: "Agents", view: (ctx, params) => registryView(ctx, { ...params, kind: "agents" }) },
  { path: "skills", label: "Skills", view: (ctx, params) => registryView(ctx, { ...params, kind: "skills" }) },
  { path: "webhooks", label: "Webhooks", view: (ctx, params) => registryView(ctx, { ...params, kind: "webhooks" }) },
];

const store = {
  get: () => {
    try {
      return localStorage.getItem(TOKEN_KEY);
    } catch {
      return null;
    }
  },
  set: (token) => {
    try {
      if (token) localStorage.setItem(TOKEN_KEY, token);
      else localStorage.removeItem(TOKEN_KEY);
    } catch {
      /* private mode: the token lives for this page only */
    }
  },
};

/** `#/tasks/abc?status=running` -> {path: "tasks", id: "abc", query: URLSearchParams} */
export function parseHash(hash) {
  const raw = (hash || "").replace(/^#\/?/, "");
  const [pathPart, queryPart = ""] = raw.split("?");
  const [path = "", ...rest] = pathPart.split("/").filter(Boolean).map(decodeURIComponent);
  return { path, id: rest[0] || null, rest, query: new URLSearchParams(queryPart) };
}

/** A `?token=` in the address (search or hash) signs in, and is removed from the address bar. */
function takeUrlToken() {
  const url = new URL(location.href);
  let token = url.searchParams.get("token");
  if (token) url.searchParams.delete("token");
  const [hashPath, hashQuery] = url.hash.split("?");
  if (hashQuery) {
    const q = new URLSearchParams(hashQuery);
    if (q.get("token")) {
      token = token || q.get("token");
      q.delete("token");
      url.hash = q.toString() ? `${hashPath}?${q}` : hashPath;
    }
  }
  if (token) history.replaceState(null, "", url.pathname + url.search + url.hash);
  return token;
}

class App {
  constructor(root) {
    this.root = root;
    this.token = null;
    this.memoryToken = null;
    this.config = {};
    const apiBase = document.querySelector('meta[name="agent-machine-api"]')?.content || "";
    this.api = new Api(apiBase, () => this.token, () => this.signOut("Your token was refused. Sign in again."));
    this.streams = new Streams();
    this.live = null;
    this.current = null;
    this.shell = null;
  }

  async start() {
    const fromUrl = takeUrlToken();
    // On AWS the dashboard (CloudFront) and the API (HTTP API) live on different origins: the deployment
    // uploads a config.json next to index.html naming the API. Locally there is none and the API is this origin.
    const deployed = await fetch("config.json", { cache: "no-store" })
      .then((r) => (r.ok ? r.json() : null))
      .catch(() => null);
    if (deployed && deployed.api_base_url) this.api.base = String(deployed.api_base_url).replace(/\/$/, "");
    try {
      this.config = { ...(deployed || {}), ...((await this.api.get("/api/config", { auth: false })) || {}) };
    } catch (err) {
      this.config = {};
      console.warn("no /api/config", err);
    }
    const token = fromUrl || store.get();
    if (token && (await this.trySignIn(token, { quiet: !fromUrl }))) return;
    this.showSignIn(fromUrl ? "That token was refused." : "");
  }

  async trySignIn(token, { quiet = false } = {}) {
    try {
      await this.api.get("/api/status", { token });
    } catch (err) {
      if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
        if (!quiet) toast("That token was refused.", "error");
        store.set(null);
        return false;
      }
      // The machine is unreachable or erroring: keep the token and show the dashboard offline.
      console.warn("status check failed", err);
    }
    this.token = token;
    store.set(token);
    this.enter();
    return true;
  }

  showSignIn(message = "") {
    this.teardown();
    replace(this.root, signInView({
      message,
      machineId: this.config.machine_id,
      onSubmit: async (token) => {
        const ok = await this.trySignIn(token.trim());
        if (!ok) return "That token was refused.";
        return null;
      },
    }));
  }

  signOut(message = "") {
    this.token = null;
    store.set(null);
    this.showSignIn(message);
  }

  teardown() {
    window.removeEventListener("hashchange", this.onHash);
    this.current?.destroy?.();
    this.current = null;
    this.live?.stop();
    this.live = null;
    this.shell = null;
  }

  enter() {
    this.teardown();
    this.live = new LiveSocket(websocketUrl(this.config.websocket_url), () => this.token, this.streams);
    this.buildShell();
    this.live.addEventListener("state", (e) => this.showState(e.detail));
    this.live.start();
    this.onHash = () => this.route();
    window.addEventListener("hashchange", this.onHash);
    if (!location.hash || location.hash === "#" || location.hash === "#/") {
      history.replaceState(null, "", "#/chat");
    }
    this.route();
  }

  buildShell() {
    const state = h("span", { class: "conn conn-connecting", testid: "conn-status", dataset: { state: "connecting" },
      title: "Live updates" }, "Connecting…");
    const nav = h("nav", { class: "nav", testid: "nav" },
      ROUTES.map((r) => h("a", { href: `#/${r.path}`, class: "nav-link", testid: `nav-${r.path}`, dataset: { path: r.path } },
        r.label)));
    const main = h("main", { class: "main", id: "main", testid: "main" });
    const header = h("header", { class: "topbar" },
      h("a", { class: "brand", href: "#/chat" }, h("span", { class: "brand-mark" }, "◆"), " Agent machine",
        this.config.machine_id ? h("span", { class: "machine-id", testid: "machine-id" }, this.config.machine_id) : null),
      nav,
      h("div", { class: "topbar-right" }, state,
        h("button", { class: "btn btn-ghost btn-small", testid: "sign-out", onclick: () => this.signOut() }, "Sign out")));
    const offline = h("div", { class: "offline-banner", testid: "offline-banner", hidden: true },
      "Offline: live updates paused. Reconnecting…");
    replace(this.root, h("div", { class: "shell" }, header, offline, main,
      h("footer", { class: "foot" }, `agent machine ${this.config.version || ""}`)));
    this.shell = { main, nav, state, offline };
  }

  showState(state) {
    if (!this.shell) return;
    const { state: el, offline } = this.shell;
    el.dataset.state = state;
    el.className = `conn conn-${state}`;
    el.textContent = { online: "Live", offline: "Offline", connecting: "Connecting…" }[state] || state;
    // Short blips (a reconnect in under two seconds) do not flash the banner.
    clearTimeout(this.bannerTimer);
    if (state === "offline") this.bannerTimer = setTimeout(() => { offline.hidden = this.live?.state !== "offline"; }, 1500);
    else offline.hidden = true;
  }

  route() {
    if (!this.shell) return;
    const parsed = parseHash(location.hash);
    const route = ROUTES.find((r) => r.path === parsed.path);
    if (!route) {
      location.hash = "#/chat";
      return;
    }
    for (const a of this.shell.nav.children) a.classList.toggle("active", a.dataset.path === route.path);
    const params = { id: parsed.id, rest: parsed.rest, query: parsed.query };
    // A view may take a change of its own parameters without being rebuilt (chat switching sessions).
    if (this.current && this.current.route === route && this.current.update?.(params)) {
      this.current.params = params;
      return;
    }
    this.current?.destroy?.();
    const ctx = { api: this.api, live: this.live, streams: this.streams, config: this.config, app: this };
    let view;
    try {
      view = route.view(ctx, params);
    } catch (err) {
      console.error(err);
      view = { el: h("div", { class: "error-box" }, `This page failed to load: ${err.message}`) };
    }
    view.route = route;
    view.params = params;
    this.current = view;
    replace(this.shell.main, view.el);
    window.scrollTo(0, 0);
  }
}

const app = new App(document.getElementById("app"));
window.agentMachine = app; // for debugging from the console
app.start();
