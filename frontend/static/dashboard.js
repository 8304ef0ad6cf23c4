// Project dashboard: draws the statistics and keeps them live over the project's WebSocket.
//
// Configuration comes from data-* attributes on #dashboard (URLs, CSRF token, admin flag); the
// first statistics are embedded in the page (json_script "stats-data").  Rounds and jobs have one
// shape everywhere (annotate/payloads.py): the statistics, the pushes and the API agree.
// Messages handled:
//   stats.updated -> redraw everything from msg.stats
//   round.status  -> training status at once; when a round ends, fetch fresh statistics
//   job.progress  -> the job list (progress bar, error, download link)
//   queue.updated -> fetch fresh statistics (throttled)

import {api, notify} from "./api.js";
import {barChart, lineChart} from "./charts.js";
import {renderAccuracy, renderQuality} from "./quality.js";
import {LiveSocket} from "./ws.js";

const root = document.getElementById("dashboard");
const urls = {stats: root.dataset.statsUrl, exports: root.dataset.exportsUrl, ws: root.dataset.wsUrl};
const isAdmin = root.dataset.admin === "true";  // downloads are for project admins
let stats = JSON.parse(document.getElementById("stats-data").textContent);
const jobs = new Map((stats.jobs || []).map((j) => [j.id, j]));

const $ = (sel) => root.querySelector(sel);
const pct = (v) => `${Math.round(v * 100)}%`;

function setText(sel, text) {
  const el = $(sel);
  if (el) el.textContent = text;
}

function renderTotals(s) {
  const t = s.totals;
  setText("[data-stat=items]", t.items);
  setText("[data-stat=labeled]", t.labeled);
  setText("[data-stat=pending]", t.pending);
  renderAccuracy($("#accuracy"), s.accuracy, s.audit_plan);
}

// Rounds of a project run one at a time and are numbered in order, so the newest one shown is the
// current one: a push or a statistics response about an older round arriving late (a finished
// round's "done" push can arrive after the next round's "queued" one) must not replace it.
let shownRound = 0;

function renderTraining(rnd) {  // the newest round (payloads.round_payload), or null before the first
  if (rnd ? rnd.number < shownRound : shownRound > 0) return;
  if (rnd) shownRound = rnd.number;
  const box = $("#training");
  const status = rnd ? rnd.status : "none";
  box.dataset.state = status;
  setText("#training-state", rnd ? `Round ${rnd.number}: ${status}` : "no round yet");
  setText("#training-message", !rnd ? "" : status === "failed" ? rnd.failure : rnd.message || "");
  const bar = $("#training-progress");
  bar.hidden = status !== "running" && status !== "queued";
  bar.value = rnd ? rnd.progress : 0;
}

function queuedSeconds(j) {
  return Math.max(0, Math.round((Date.now() - Date.parse(j.created_at)) / 1000));
}

function queuedFor(j) {
  const s = queuedSeconds(j);
  return s >= 120 ? `${Math.floor(s / 60)} min` : `${s} s`;
}

// A queued job's waiting time keeps counting on the page (nothing is pushed while it waits).
setInterval(() => { if ([...jobs.values()].some((j) => j.status === "queued")) renderJobs(); }, 1000);

function renderJobs() {
  const list = $("#jobs");
  const rows = [...jobs.values()].slice(0, 6);
  list.replaceChildren(...rows.map((j) => {
    const li = document.createElement("li");
    li.dataset.state = j.status;
    li.dataset.jobId = j.id;
    const what = document.createElement("span");
    what.textContent = `${j.kind} · ${j.status}`;
    li.append(what);
    if (j.status === "running" || j.status === "queued") {
      const p = document.createElement("progress");
      p.max = 1;
      p.value = j.progress || 0;
      li.append(p);
    }
    const msg = document.createElement("span");
    msg.className = j.status === "failed" ? "error" : "muted";
    msg.textContent = j.status === "failed" ? j.error
      : j.status === "queued" && (j.waiting || queuedSeconds(j) >= 5)
        ? `${j.waiting || "waiting for a free worker"} (queued ${queuedFor(j)})` : j.message || "";
    li.append(msg);
    if (isAdmin && j.download) {
      const a = document.createElement("a");
      a.href = j.download;
      a.textContent = "download";
      a.className = "download";
      li.append(a);
    }
    return li;
  }));
  $("#jobs-empty").hidden = rows.length > 0;
}

function render(s) {
  stats = s;
  renderTotals(s);
  renderTraining(s.training);
  renderQuality($("#quality"), s.quality);
  lineChart($("#chart-curve"), {
    // A round's weighted estimate from a few audit items can leave [0, 1] (its interval is clipped): plot it clipped.
    points: s.learning_curve.map((p) => ({x: p.labels, y: Math.min(1, Math.max(0, p.accuracy)), lo: p.lo, hi: p.hi,
      title: p.estimator
        ? `round ${p.round}: ${p.correct}/${p.n} audit items right; estimated accuracy ${pct(p.accuracy)} ` +
          `(audit items drawn where the model was unsure, weighted) with ${p.labels} labels`
        : `round ${p.round}: ${p.correct}/${p.n} audit items right (${pct(p.accuracy)}) with ${p.labels} labels`})),
    xLabel: "labels the model was trained on", yLabel: "audit accuracy", format: pct,
    emptyText: "no audit items labeled yet",
  });
  $("#chart-curve").dataset.points = s.learning_curve.length;
  barChart($("#chart-distribution"), {bars: s.label_distribution.map((d) => ({label: d.label, value: d.count})),
    yLabel: "items", emptyText: "no labels yet"});
  barChart($("#chart-annotators"), {bars: s.per_annotator.map((d) => ({label: d.annotator, value: d.labels})),
    yLabel: "labels", emptyText: "no labels yet"});
  barChart($("#chart-hours"), {bars: s.per_hour.map((d) => ({label: new Date(d.hour).getHours() + "h", value: d.labels,
    title: `${new Date(d.hour).toLocaleString()}: ${d.labels} labels`})), yLabel: "labels / hour", labelEvery: 3,
    emptyText: "no labels in the last 24 hours"});
  barChart($("#chart-rounds"), {bars: s.rounds.map((r) => ({label: r.number, value: +(r.run_s || 0).toFixed(2),
    cls: r.status, title: `round ${r.number} (${r.strategy}, ${r.status}): ${(r.run_s || 0).toFixed(2)} s` +
      (r.timings ? " — " + Object.entries(r.timings).map(([k, v]) => `${k} ${(+v).toFixed(2)}`).join(", ") : "") +
      (r.failure ? ` — ${r.failure}` : "")})), yLabel: "seconds", emptyText: "no rounds yet"});
  for (const j of s.jobs || []) jobs.set(j.id, j);
  renderJobs();
  setText("#updated", new Date(s.generated_at).toLocaleTimeString());
}

let fetching = null;
let again = false;
async function refresh() {
  if (fetching) { again = true; return; }
  fetching = api(urls.stats)
    .then(render)
    .catch((e) => notify($("#notice"), `Could not refresh the statistics: ${e.message}`, {kind: "error"}))
    .finally(() => {
      fetching = null;
      if (again) { again = false; setTimeout(refresh, 1000); }
    });
}

function onMessage(msg) {
  if (msg.type === "stats.updated") {
    render(msg.stats);
  } else if (msg.type === "round.status") {
    renderTraining(msg.round);
    if (msg.round.status === "done" || msg.round.status === "failed") refresh();
  } else if (msg.type === "job.progress") {
    const j = msg.job;
    jobs.delete(j.id);
    const ordered = new Map([[j.id, j], ...jobs]);
    jobs.clear();
    for (const [k, v] of ordered) jobs.set(k, v);
    renderJobs();
    if (j.status === "done") refresh();
  } else if (msg.type === "queue.updated") {
    refresh();
  }
}

const light = $("#live");
new LiveSocket(urls.ws, {
  onMessage,
  onOpen: (reconnected) => { if (reconnected) refresh(); },
  onState: (state) => {
    light.dataset.state = state;
    light.title = `live updates: ${state}`;
    light.setAttribute("aria-label", light.title);
  },
});

for (const form of root.querySelectorAll("form[data-export]")) {
  const button = form.querySelector("[type=submit]");
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (button.disabled) return;  // a double click starts one export, not two
    button.disabled = true;
    const body = {format: form.elements.format.value, predictions: form.elements.predictions.checked};
    try {
      onMessage({type: "job.progress", job: await api(urls.exports, body)});
    } catch (err) {
      notify($("#export-error"), `Export not started: ${err.message}`, {kind: "error", ms: 0});
    } finally {
      button.disabled = false;
    }
  });
}

window.addEventListener("resize", () => render(stats));
render(stats);
