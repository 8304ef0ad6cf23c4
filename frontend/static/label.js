// The labeling page: show one item large, label it by key or button, go on at once.
//
// Items are leased in small batches and their images preloaded, so a keypress shows the next
// item without waiting for the network.  Label, skip and undo requests run in order in the
// background (one promise chain); each carries a client_id so a retry after a network error is
// stored once.  A WebSocket to the project's group refreshes the queue when a round writes a
// new batch and shows the round's progress; it reconnects with backoff and resyncs.
import { LiveSocket } from "./ws.js";

const PREFETCH = 6;      // items held (current + preloaded)
const REFILL_AT = 3;     // lease more when fewer than this are waiting
const root = document.getElementById("labeler");
const API = root.dataset.api;
const $ = (id) => document.getElementById(id);

const state = {
  queue: [],            // leased items waiting, images preloading
  current: null,
  shownAt: 0,
  done: new Set(),      // item ids labeled/skipped here whose request may still be in flight
  chain: Promise.resolve(),
  leasing: null,
  leaseAgain: false,
  round: null,
};

// ------------------------------------------------------------------ HTTP
function csrfToken() {
  const m = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return m ? decodeURIComponent(m[1]) : root.dataset.csrf;
}

class ApiError extends Error {
  constructor(message, status) { super(message); this.status = status; }
}

async function call(path, body) {
  const init = {credentials: "same-origin", headers: {"Accept": "application/json"}};
  if (body !== undefined) {
    init.method = "POST";
    init.headers["Content-Type"] = "application/json";
    init.headers["X-CSRFToken"] = csrfToken();
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(API + path, init);
  let data = {};
  try { data = await resp.json(); } catch { /* not JSON: handled below */ }
  if (resp.status === 401) { location.href = `/accounts/login/?next=${encodeURIComponent(location.pathname)}`; }
  if (!resp.ok) throw new ApiError(data.error || `${resp.status} ${resp.statusText}`, resp.status);
  return data;
}

// Network failures (not 4xx answers) are retried with the same body, so with the same client_id.
async function callRetrying(path, body, tries = 6) {
  for (let i = 0; ; i++) {
    try { return await call(path, body); } catch (err) {
      if (err instanceof ApiError || i >= tries - 1) throw err;
      await new Promise((r) => setTimeout(r, 300 * 2 ** i));
    }
  }
}

function uuid() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40; b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

// Requests that change labels run one after another, in the order of the keypresses.
function inOrder(fn) {
  const run = state.chain.then(fn);
  state.chain = run.catch(() => {});
  return run;
}

// ------------------------------------------------------------------ view
let toastTimer = null;
function toast(text, kind = "info") {
  const el = $("toast");
  el.textContent = text;
  el.dataset.kind = kind;
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.hidden = true; }, 4000);
}

function showProgress(p) {
  if (!p) return;
  $("labeled-count").textContent = p.labeled;
  $("total-count").textContent = p.total;
  if (p.mine !== undefined) $("mine-count").textContent = p.mine;
  $("queue-info").textContent = `${p.pending} waiting in the queue`;
  if (p.round) showRound(p.round);
}

function showRound(r) {
  state.round = r;
  const el = $("round-indicator");
  el.dataset.round = r.number;
  el.dataset.state = r.status === "queued" || r.status === "running" ? "running" : r.status;
  if (r.status === "running" || r.status === "queued") {
    const pct = Math.round((r.progress || 0) * 100);
    el.textContent = `Round ${r.number} running… ${pct}%${r.message ? " · " + r.message : ""}`;
  } else if (r.status === "failed") {
    el.textContent = `Round ${r.number} failed`;
    el.title = r.failure || "";
  } else {
    el.textContent = `Round ${r.number}`;
    el.title = r.message || "";
  }
}

function render() {
  const img = $("current-image");
  const item = state.current;
  if (!item) {
    img.hidden = true;
    $("item-caption").textContent = "";
    const running = state.round && (state.round.status === "running" || state.round.status === "queued");
    $("empty-text").textContent = running
      ? "Waiting for the next batch: the model is being retrained…"
      : "Nothing to label right now. New items appear here by themselves.";
    $("empty").hidden = false;
    root.dataset.itemId = "";
    return;
  }
  $("empty").hidden = true;
  img.src = item.image_url;
  img.hidden = false;
  img.dataset.itemId = item.item_id;
  root.dataset.itemId = item.item_id;
  $("item-caption").textContent = `item ${item.item_id}` + (item.round ? ` · from round ${item.round}` : "");
  state.shownAt = performance.now();
}

function next() {
  state.current = state.queue.shift() || null;
  render();
  if (state.queue.length < REFILL_AT) lease();
}

function preload(item) {
  const im = new Image();
  im.decoding = "async";
  im.src = item.image_url;
  item.preloaded = im;
  return item;
}

// ------------------------------------------------------------------ queue
function lease() {
  if (state.leasing) {
    // A lease is in flight; it may have been answered before the newest queue existed: ask again after it.
    state.leaseAgain = true;
    return state.leasing;
  }
  state.leasing = (async () => {
    try {
      const data = await callRetrying("lease", {n: PREFETCH});
      const have = new Set(state.queue.map((i) => i.item_id));
      if (state.current) have.add(state.current.item_id);
      for (const item of data.items) {
        if (have.has(item.item_id) || state.done.has(item.item_id)) continue;
        state.queue.push(preload(item));
      }
      showProgress(data.progress);
      if (!state.current && state.queue.length) next();
      else if (!state.current) render();
    } catch (err) {
      toast(`Could not get items: ${err.message}`, "error");
    } finally {
      state.leasing = null;
      if (state.leaseAgain) {
        state.leaseAgain = false;
        lease();
      }
    }
  })();
  return state.leasing;
}

function submit(kind, label) {
  const item = state.current;
  if (!item) return;
  const body = {item_id: item.item_id, client_id: uuid(), time_ms: Math.round(performance.now() - state.shownAt)};
  if (kind === "label") body.label = label;
  state.done.add(item.item_id);
  next();
  inOrder(() => callRetrying(kind, body))
    .then((data) => showProgress(data.progress))
    .catch((err) => toast(`Item ${item.item_id} was not saved: ${err.message}`, "error"));
}

function undo() {
  inOrder(() => callRetrying("undo", {client_id: uuid()}))
    .then((data) => {
      const back = data.item;
      state.done.delete(back.item_id);
      state.queue = state.queue.filter((i) => i.item_id !== back.item_id);
      if (state.current && state.current.item_id !== back.item_id) state.queue.unshift(state.current);
      state.current = preload(back);
      render();
      showProgress(data.progress);
      toast(`Undone: ${data.undone.action === "skip" ? "skip" : "label " + data.undone.label} on item ${back.item_id}`);
    })
    .catch((err) => toast(err.status === 404 ? "Nothing to undo." : `Undo failed: ${err.message}`, "error"));
}

// ------------------------------------------------------------------ input
function flash(btn) {
  btn.classList.add("pressed");
  setTimeout(() => btn.classList.remove("pressed"), 120);
}

function toggleHelp(show) {
  const el = $("help");
  el.hidden = show === undefined ? !el.hidden : !show;
}

for (const btn of document.querySelectorAll(".class-btn")) {
  btn.addEventListener("click", () => { flash(btn); submit("label", btn.dataset.label); });
}
$("skip-btn").addEventListener("click", (e) => { flash(e.currentTarget); submit("skip"); });
$("undo-btn").addEventListener("click", (e) => { flash(e.currentTarget); undo(); });
$("help-btn").addEventListener("click", () => toggleHelp());
$("help-close").addEventListener("click", () => toggleHelp(false));

document.addEventListener("keydown", (e) => {
  if (e.target.closest && e.target.closest("input, textarea, select, [contenteditable]")) return;
  if (e.altKey || e.metaKey) return;
  const key = e.key.toLowerCase();
  if (e.ctrlKey) {
    if (key === "z") { e.preventDefault(); $("undo-btn").click(); }
    return;
  }
  if (!$("help").hidden) {
    if (key === "h" || key === "escape") { e.preventDefault(); toggleHelp(false); }
    return;
  }
  if (e.repeat) return;  // a held key must not label a run of items
  const btn = root.querySelector(`[data-hotkey="${CSS.escape(key)}"]`);
  if (btn) { e.preventDefault(); btn.click(); }
});

// ------------------------------------------------------------------ live updates
function onMessage(msg, receivedAt) {
  // Other scripts (and tests) can watch pushes: detail = {message, receivedAt}.
  document.dispatchEvent(new CustomEvent("loupe:message", {detail: {message: msg, receivedAt}}));
  if (msg.type === "queue.updated") {
    $("queue-info").textContent = `${msg.pending} waiting in the queue`;
    root.dataset.queueRound = msg.round;
    lease();
  } else if (msg.type === "round.status") {
    showRound(msg.round);
    if (!state.current) render();
  }
}

const sock = new LiveSocket(root.dataset.ws, {
  onMessage,
  onOpen: (reconnected) => {
    if (reconnected) {  // pushes may have been missed while disconnected
      call("status").then((d) => showProgress(d.progress)).catch(() => {});
      lease();
    }
  },
  onState: (s) => { $("conn").dataset.state = s; },
});
window.loupeSocket = sock;

// Leaving the page hands the items not labeled yet back to the queue at once (instead of after the
// lease expires), so teammates can have them.  keepalive lets the request outlive the page.
window.addEventListener("pagehide", () => {
  const ids = state.queue.map((i) => i.item_id);
  if (state.current) ids.push(state.current.item_id);
  if (!ids.length) return;
  fetch(API + "release", {
    method: "POST", keepalive: true, credentials: "same-origin",
    headers: {"Content-Type": "application/json", "X-CSRFToken": csrfToken()},
    body: JSON.stringify({item_ids: ids}),
  }).catch(() => {});
});

// Safety net while there is nothing to show: ask again now and then (the WebSocket usually says first).
setInterval(() => { if (!state.current && document.visibilityState === "visible") lease(); }, 20000);

lease();
