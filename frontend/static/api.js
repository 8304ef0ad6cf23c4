// The one fetch helper of every page script: JSON in and out, Django's CSRF token on writes, errors as
// ApiError with the server's message, a 401 sends the browser to the login page.  Also the in-page
// notice that replaces alert().
//
//   import {api, apiRetrying, ApiError, notify} from "./api.js";
//   const data = await api("/api/projects/1/lease", {n: 6});   // POST with a body, GET without
//   notify(document.getElementById("notice"), "Saved.");        // role=status area, hides itself

export class ApiError extends Error {
  constructor(message, status) { super(message); this.status = status; }
}

export function csrfToken() {
  const m = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  if (m) return decodeURIComponent(m[1]);
  const el = document.querySelector("[data-csrf]");
  return el ? el.dataset.csrf : "";
}

export async function api(url, body, {method} = {}) {
  const init = {credentials: "same-origin", headers: {"Accept": "application/json"}};
  if (body !== undefined || (method && method !== "GET")) {
    init.method = method || "POST";
    init.headers["Content-Type"] = "application/json";
    init.headers["X-CSRFToken"] = csrfToken();
    init.body = JSON.stringify(body === undefined ? {} : body);
  }
  const resp = await fetch(url, init);
  let data = {};
  try { data = await resp.json(); } catch { /* not JSON: the status says what happened */ }
  if (resp.status === 401) location.href = `/accounts/login/?expired=1&next=${encodeURIComponent(location.pathname)}`;
  if (!resp.ok) throw new ApiError(data.error || `${resp.status} ${resp.statusText}`, resp.status);
  return data;
}

// Network failures (not answers with a status) are retried with the same body, so an idempotent
// request (a label with its client_id) is stored once.
export async function apiRetrying(url, body, tries = 6) {
  for (let i = 0; ; i++) {
    try { return await api(url, body); } catch (err) {
      if (err instanceof ApiError || i >= tries - 1) throw err;
      await new Promise((r) => setTimeout(r, 300 * 2 ** i));
    }
  }
}

// For writes that must not be lost (a label, with its client_id, is stored once however often it is sent):
// retried until the server answers, also through a restart (network errors and 502/503/504), waiting at
// most 5 s between tries; onWait(err) is told of every failed try.  Other answers (4xx) are final.
const TRANSIENT = new Set([502, 503, 504]);
export async function apiPersistent(url, body, onWait = () => {}) {
  for (let i = 0; ; i++) {
    try { return await api(url, body); } catch (err) {
      if (err instanceof ApiError && !TRANSIENT.has(err.status)) throw err;
      onWait(err);
      await new Promise((r) => setTimeout(r, Math.min(5000, 300 * 2 ** i)));
    }
  }
}

// Show a message in a page element (role=status / alert) instead of a modal alert(); hides after `ms`.
const timers = new WeakMap();
export function notify(el, text, {kind = "info", ms = 4000} = {}) {
  if (!el) return;
  el.textContent = text;
  el.dataset.kind = kind;
  el.hidden = false;
  clearTimeout(timers.get(el));
  if (ms) timers.set(el, setTimeout(() => { el.hidden = true; }, ms));
}

export function uuid() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40; b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
