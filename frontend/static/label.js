// The labeling page: show one item large, label it by key or button, go on at once.
//
// Items are leased in small batches and their images preloaded, so a keypress shows the next
// item without waiting for the network.  Label, skip and undo requests run in order in the
// background (one promise chain); each carries a client_id so a retry after a network error is
// stored once.  A WebSocket to the project's group refreshes the queue when a round writes a
// new batch and shows "updating the queue…" with a progress bar while a round runs.
//
// Keys: each class button declares its key (data-hotkey, fixed per project: services/keymap.py).
// The page's own keys are never letters or digits: Enter accepts the model's suggestion, Shift+1..9
// picks a candidate, "/" finds a class by name, Space skips, Backspace undoes, "?" helps, + - zoom.
import {apiPersistent, apiRetrying, csrfToken, notify, uuid} from "./api.js";
import {LiveSocket} from "./ws.js";
import {showGuess} from "./guess.js";
import {ZoomPan} from "./zoom.js";

const PREFETCH = 6;      // items held (current + preloaded)
const REFILL_AT = 3;     // lease more when fewer than this are waiting
const MAX_SENDING = 50;  // the most items named as being sent in a lease request (the API's limit)
const RECENT = 8;        // labeled items kept in the strip (always this many slots, so it never reflows)
const PIXELATED_MAX = 128; // images this small (px, natural size) are drawn with hard pixel edges when enlarged
// (the demo's digits are 8x8 pixels stored at 128 px; a photo is larger)
const root = document.getElementById("labeler");
// The API's URLs come from the server (reverse()), one data-url-* attribute each.
const URL_OF = {status: root.dataset.urlStatus, lease: root.dataset.urlLease, label: root.dataset.urlLabel,
  skip: root.dataset.urlSkip, undo: root.dataset.urlUndo, release: root.dataset.urlRelease};
const $ = (id) => document.getElementById(id);
const classButtons = [...root.querySelectorAll(".class-btn")];
const byLabel = new Map(classButtons.map((b) => [b.dataset.label, b]));

const state = {
  queue: [],            // leased items waiting, images preloading
  current: null,
  shownAt: 0,
  done: new Set(),      // item ids labeled/skipped here whose request may still be in flight
  sending: new Set(),   // item ids whose label or skip is not acknowledged yet (still leased to us)
  chain: Promise.resolve(),
  leasing: null,
  leaseAgain: false,
  round: null,
  recent: [],           // [{item_id, image_url, label, skipped}] newest first
  unsent: 0,            // labels and skips not yet acknowledged by the server
  offline: false,       // a send failed and is being retried
};

function inOrder(fn) {
  const run = state.chain.then(fn);
  state.chain = run.catch(() => {});
  return run;
}

const toast = (text, kind = "info") => notify($("toast"), text, {kind});
const zoom = new ZoomPan($("canvas"), $("current-image"), {
  onChange: (s) => { $("zoom-level").textContent = `${Math.round(s * 100)}%`; },
});

// ------------------------------------------------------------------ view
// Hard pixel edges suit a tiny image enlarged many times (an 8x8 digit); a photo is drawn smoothly.
function markPixelated(img) {
  const set = () => img.classList.toggle("pixelated",
    img.naturalWidth > 0 && Math.max(img.naturalWidth, img.naturalHeight) <= PIXELATED_MAX);
  img.addEventListener("load", set);
  if (img.complete) set();
}
markPixelated($("current-image"));

function showProgress(p) {
  if (!p) return;
  $("labeled-count").textContent = p.labeled;
  $("total-count").textContent = p.total;
  if (p.mine !== undefined) $("mine-count").textContent = p.mine;
  $("queue-info").textContent = `${p.pending} waiting`;
  if (p.round) showRound(p.round);
}

// Annotators see whether the queue is being updated and how far along, not the solver's terms
// (the round's own message stays in the tooltip for whoever is curious).
function showRound(r) {
  state.round = r;
  const el = $("round-indicator");
  const running = r.status === "running" || r.status === "queued";
  el.dataset.round = r.number;
  el.dataset.state = running ? "running" : r.status;
  $("round-progress").value = running ? r.progress || 0 : 0;
  if (running) {
    $("round-text").textContent = "updating the queue…";
    el.title = `round ${r.number}: ${Math.round((r.progress || 0) * 100)}%`;
  } else if (r.status === "failed") {
    $("round-text").textContent = "queue update failed — keep labeling";
    el.title = `round ${r.number} failed; an admin can see why`;
  } else {
    $("round-text").textContent = "queue up to date";
    el.title = `round ${r.number}`;
  }
}

function render() {
  const img = $("current-image");
  const item = state.current;
  zoom.reset();
  showGuess(root, item, (label) => submit("label", label, "candidate"));
  if (!item) {
    img.hidden = true;
    $("item-caption").textContent = "";
    const running = state.round && (state.round.status === "running" || state.round.status === "queued");
    $("empty-text").textContent = running
      ? "Waiting for the next batch: the queue is being updated…"
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

function renderRecent() {
  const tiles = state.recent.map((r) => {
    const li = document.createElement("li");
    const b = document.createElement("button");
    b.type = "button";
    b.className = "recent-item";
    b.dataset.itemId = r.item_id;
    b.title = `item ${r.item_id}: ${r.skipped ? "skipped" : r.label} — click to fix`;
    b.setAttribute("aria-label", `fix item ${r.item_id}, now ${r.skipped ? "skipped" : r.label}`);
    const im = document.createElement("img");
    im.alt = "";
    markPixelated(im);
    im.src = r.image_url;
    const cap = document.createElement("span");
    cap.textContent = r.skipped ? "skipped" : r.label;
    b.append(im, cap);
    b.addEventListener("click", () => undo(r.item_id));
    li.append(b);
    return li;
  });
  // Empty slots keep the strip's shape from the first label on (nothing reflows as it fills).
  while (tiles.length < RECENT) {
    const li = document.createElement("li");
    li.className = "recent-slot";
    li.setAttribute("aria-hidden", "true");
    tiles.push(li);
  }
  $("recent").replaceChildren(...tiles);
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
      // The items being sent are still leased to us: named, the server does not count them as part of
      // the page's PREFETCH (nor toward the fair-share cap), or a fast labeler's lease would bring back
      // only those and the page would run empty until their submits landed.
      const data = await apiRetrying(URL_OF.lease, {n: PREFETCH, sending: [...state.sending].slice(0, MAX_SENDING)});
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

function submit(kind, label, origin = "manual") {
  const item = state.current;
  if (!item) return;
  const body = {item_id: item.item_id, client_id: uuid(), time_ms: Math.round(performance.now() - state.shownAt)};
  if (kind === "label") { body.label = label; body.origin = origin; }
  state.done.add(item.item_id);
  state.sending.add(item.item_id);
  state.recent = [{item_id: item.item_id, image_url: item.image_url, label, skipped: kind === "skip"},
                  ...state.recent.filter((r) => r.item_id !== item.item_id)].slice(0, RECENT);
  renderRecent();
  tabs?.postMessage({done: item.item_id});
  next();
  // Sent until the server answers (a restart, a dropped connection): nothing typed is given up.
  state.unsent += 1;
  const waiting = (err) => {
    state.offline = true;
    notify($("toast"), `Server not answering (${err.message}): ${state.unsent} label(s) kept here, ` +
      "sent when it is back", {kind: "error", ms: 0});
  };
  inOrder(() => apiPersistent(URL_OF[kind], body, waiting))
    .then((data) => showProgress(data.progress))
    .catch((err) => toast(`Item ${item.item_id} was not saved: ${err.message}`, "error"))
    .finally(() => {
      state.unsent -= 1;
      state.sending.delete(item.item_id);
      // A landed submit frees a lease: refill now if the page is short (a lease made while more were
      // in flight than the server discounts may have come back short).
      if (state.queue.length < REFILL_AT) lease();
      if (state.offline && !state.unsent) {
        state.offline = false;
        toast("Server back: every label is saved.");
      }
    });
}

// The tabs of one annotator hold the same leased items (a lease is per person): a tab that labels or
// skips an item tells the others, which drop it, instead of offering it again (a 409 when labeled twice).
const tabs = "BroadcastChannel" in window ? new BroadcastChannel(`loupe-label-${root.dataset.projectId}`) : null;
if (tabs) {
  tabs.onmessage = ({data}) => {
    if (data.back !== undefined) { state.done.delete(data.back); return; }  // undone there: may come back here
    state.done.add(data.done);
    state.queue = state.queue.filter((i) => i.item_id !== data.done);
    if (state.current && state.current.item_id === data.done) next();
    else if (state.queue.length < REFILL_AT) lease();
  };
}

// Undo the latest label, or the one on `itemId` (a click in the strip): the item comes back to label again.
function undo(itemId) {
  const body = {client_id: uuid()};
  if (itemId !== undefined) body.item_id = itemId;
  inOrder(() => apiRetrying(URL_OF.undo, body))
    .then((data) => {
      const back = data.item;
      state.done.delete(back.item_id);
      tabs?.postMessage({back: back.item_id});
      state.recent = state.recent.filter((r) => r.item_id !== back.item_id);
      renderRecent();
      state.queue = state.queue.filter((i) => i.item_id !== back.item_id);
      if (state.current && state.current.item_id !== back.item_id) state.queue.unshift(state.current);
      state.current = preload(back);
      render();
      showProgress(data.progress);
      const what = data.undone.action === "skip" ? "skip" : `label ${data.undone.label}`;
      toast(`Undone: ${what} on item ${back.item_id}. Label it again.`);
    })
    .catch((err) => toast(err.status === 404 ? "Nothing to undo." : `Undo failed: ${err.message}`, "error"));
}

// ------------------------------------------------------------------ type-ahead
const finder = $("finder");

function filterClasses() {
  const q = finder.value.trim().toLowerCase();
  let first = null;
  const starts = [], contains = [];
  for (const b of classButtons) {
    const name = b.dataset.label.toLowerCase();
    const hit = !q || name.includes(q);
    b.hidden = !hit;
    b.classList.remove("first-match");
    if (hit && q) (name.startsWith(q) ? starts : contains).push(b);
  }
  first = starts[0] || contains[0] || null;
  if (first) first.classList.add("first-match");
  root.dataset.firstMatch = first ? first.dataset.label : "";
  return first;
}

function closeFinder() {
  finder.value = "";
  filterClasses();
  finder.blur();
}

finder.addEventListener("input", filterClasses);
finder.addEventListener("keydown", (e) => {
  if (e.key === "Enter") {
    e.preventDefault();
    const first = filterClasses();
    if (first) { flash(first); submit("label", first.dataset.label); closeFinder(); }
  } else if (e.key === "Escape") {
    e.preventDefault();
    closeFinder();
  }
});

// ------------------------------------------------------------------ input
function flash(btn) {
  btn.classList.add("pressed");
  setTimeout(() => btn.classList.remove("pressed"), 120);
}

function toggleHelp(show) {
  const el = $("help");
  el.hidden = show === undefined ? !el.hidden : !show;
  if (!el.hidden) $("help-close").focus();
}

for (const btn of classButtons) {
  btn.addEventListener("click", () => { flash(btn); submit("label", btn.dataset.label); });
}
$("accept-btn").addEventListener("click", (e) => {
  const label = e.currentTarget.dataset.label;
  if (!label || !byLabel.has(label)) return;
  flash(e.currentTarget);
  submit("label", label, "suggestion");
});
$("skip-btn").addEventListener("click", (e) => { flash(e.currentTarget); submit("skip"); });
$("undo-btn").addEventListener("click", (e) => { flash(e.currentTarget); undo(); });
$("help-btn").addEventListener("click", () => toggleHelp());
$("help-close").addEventListener("click", () => toggleHelp(false));
$("zoom-in").addEventListener("click", () => zoom.zoomBy(1.25));
$("zoom-out").addEventListener("click", () => zoom.zoomBy(1 / 1.25));
$("zoom-reset").addEventListener("click", () => zoom.reset());

// A button clicked with the mouse keeps the focus, and Space or Enter would then press it again on top of
// their own meaning (skip, accept): give the focus back to the page after every mouse click.
document.addEventListener("click", (e) => {
  const b = e.target.closest && e.target.closest("button");
  if (b && e.detail > 0) b.blur();
});

const resetKey = root.dataset.zoomResetKey;
document.addEventListener("keydown", (e) => {
  if (e.target.closest && e.target.closest("input, textarea, select, [contenteditable]")) return;
  if (e.altKey || e.metaKey) return;
  const key = e.key.toLowerCase();
  if (e.ctrlKey) {
    if (key === "z") { e.preventDefault(); $("undo-btn").click(); }
    return;
  }
  if (!$("help").hidden) {
    if (key === "?" || key === "escape") { e.preventDefault(); toggleHelp(false); }
    return;
  }
  if (e.repeat) return;  // a held key must not label a run of items
  // Shift + digit picks a candidate (e.code: the same physical key whatever the keyboard layout).
  const digit = /^Digit([1-9])$/.exec(e.code || "");
  if (e.shiftKey && digit) {
    const cand = root.querySelector(`#candidates [data-candidate="${digit[1]}"]`);
    if (cand && !cand.disabled) {
      e.preventDefault();
      flash(cand);
      submit("label", cand.dataset.label, "candidate");  // also on the top row: picked by number, not accepted
    }
    return;
  }
  if (key === "/") { e.preventDefault(); finder.focus(); return; }
  if (key === "+" || key === "=") { e.preventDefault(); zoom.zoomBy(1.25); return; }
  if (key === "-") { e.preventDefault(); zoom.zoomBy(1 / 1.25); return; }
  if (resetKey && key === resetKey) { e.preventDefault(); zoom.reset(); return; }
  const btn = root.querySelector(`[data-hotkey="${CSS.escape(key)}"]`);
  if (btn && !btn.disabled) { e.preventDefault(); btn.click(); }
});

// ------------------------------------------------------------------ live updates
function onMessage(msg, receivedAt) {
  // Other scripts (and tests) can watch pushes: detail = {message, receivedAt}.
  document.dispatchEvent(new CustomEvent("loupe:message", {detail: {message: msg, receivedAt}}));
  if (msg.type === "queue.updated") {
    $("queue-info").textContent = `${msg.pending} waiting`;
    root.dataset.queueRound = msg.round;
    lease();
  } else if (msg.type === "round.status") {
    showRound(msg.round);
    if (!state.current) render();
  }
}

const CONN = {connecting: "connecting", open: "connected", closed: "disconnected, retrying"};
const sock = new LiveSocket(root.dataset.ws, {
  onMessage,
  onOpen: (reconnected) => {
    if (reconnected) {  // pushes may have been missed while disconnected
      apiRetrying(URL_OF.status).then((d) => showProgress(d.progress)).catch(() => {});
      lease();
    }
  },
  onState: (s) => {
    const el = $("conn");
    el.dataset.state = s;
    el.title = `live updates: ${CONN[s] || s}`;
    el.setAttribute("aria-label", el.title);
  },
});
window.loupeSocket = sock;

renderRecent();

// Leaving the page hands the items not labeled yet back to the queue at once (instead of after the
// lease expires), so teammates can have them.  keepalive lets the request outlive the page.
// Labels not yet acknowledged would be lost with the page: the browser asks before leaving.
window.addEventListener("beforeunload", (e) => { if (state.unsent) e.preventDefault(); });

window.addEventListener("pagehide", () => {
  const ids = state.queue.map((i) => i.item_id);
  if (state.current) ids.push(state.current.item_id);
  if (!ids.length) return;
  fetch(URL_OF.release, {
    method: "POST", keepalive: true, credentials: "same-origin",
    headers: {"Content-Type": "application/json", "X-CSRFToken": csrfToken()},
    body: JSON.stringify({item_ids: ids}),
  }).catch(() => {});
});

// Safety net while there is nothing to show: ask again now and then (the WebSocket usually says first).
setInterval(() => { if (!state.current && document.visibilityState === "visible") lease(); }, 20000);

lease();
