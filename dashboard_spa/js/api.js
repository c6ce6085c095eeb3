// The REST API client: bearer token on every call, JSON in and out, readable errors.

export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

function errorMessage(status, body) {
  if (body && typeof body === "object") {
    // The API's shape: {"error": {"code", "message", "details": [{loc, msg}]}}; FastAPI's default {"detail"}.
    if (body.error && typeof body.error === "object") {
      const { message, details } = body.error;
      const extra = Array.isArray(details)
        ? details.map((d) => `${(d.loc || []).filter((p) => p !== "body").join(".")}: ${d.msg}`).join("; ") : "";
      if (message) return extra ? `${message}: ${extra}` : message;
    }
    const detail = body.detail ?? body.message ?? body.error;
    if (typeof detail === "string") return detail;
    if (Array.isArray(detail)) {
      return detail
        .map((d) => (typeof d === "string" ? d : `${(d.loc || []).filter((p) => p !== "body").join(".")}: ${d.msg}`))
        .join("; ");
    }
    if (detail && typeof detail === "object") return JSON.stringify(detail);
  }
  if (typeof body === "string" && body) return body.slice(0, 200);
  return `request failed (${status})`;
}

export class Api {
  /**
   * @param {string} base  the API's origin ("" = this page's origin)
   * @param {() => string|null} getToken
   * @param {() => void} onUnauthorized  called on any 401
   */
  constructor(base, getToken, onUnauthorized = () => {}) {
    this.base = base.replace(/\/$/, "");
    this.getToken = getToken;
    this.onUnauthorized = onUnauthorized;
  }

  async request(method, path, body, { token, auth = true, signal } = {}) {
    const headers = { Accept: "application/json" };
    const bearer = token ?? this.getToken();
    if (auth && bearer) headers.Authorization = `Bearer ${bearer}`;
    const init = { method, headers, signal, cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let resp;
    try {
      resp = await fetch(this.base + path, init);
    } catch (err) {
      if (err?.name === "AbortError") throw err;
      throw new ApiError(0, "the machine cannot be reached", null);
    }
    const text = await resp.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = text;
      }
    }
    if (!resp.ok) {
      if (resp.status === 401 && auth && token === undefined) this.onUnauthorized();
      throw new ApiError(resp.status, errorMessage(resp.status, data), data);
    }
    return data;
  }

  get(path, opts) {
    return this.request("GET", path, undefined, opts);
  }
  post(path, body = {}, opts) {
    return this.request("POST", path, body, opts);
  }
  put(path, body, opts) {
    return this.request("PUT", path, body, opts);
  }
  del(path, opts) {
    return this.request("DELETE", path, undefined, opts);
  }
}

/** Build a query string from an object, skipping empty values. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}

/** The list inside a response that may be a bare list or {items|<name>: [...]} . */
export function listOf(data, ...names) {
  if (Array.isArray(data)) return data;
  if (!data || typeof data !== "object") return [];
  for (const name of ["items", ...names]) {
    if (Array.isArray(data[name])) return data[name];
  }
  return [];
}
