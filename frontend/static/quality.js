// Dashboard quality panels: the accuracy estimate (with its interval, label count and estimator),
// agreement (Krippendorff's alpha, Cohen's kappa per pair) and the annotator model (Dawid-Skene
// accuracy, agreement with the consensus, confusion matrix against it).  Data: stats.accuracy and
// stats.quality from /api/projects/<id>/stats (annotate/selectors_quality.py).

const pct = (v) => `${(v * 100).toFixed(1)}%`;
const num = (v, d = 2) => (v === null || v === undefined ? "–" : (+v).toFixed(d));

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "dataset") Object.assign(e.dataset, v); else e.setAttribute(k, v);
  }
  e.append(...children.map((c) => (c instanceof Node ? c : document.createTextNode(String(c)))));
  return e;
}

function table(head, rows) {
  return el("table", {class: "qtable"}, el("thead", {}, el("tr", {}, ...head.map((h) => el("th", {}, h)))),
    el("tbody", {}, ...rows.map((r) => el("tr", {}, ...r.map((c) => el("td", {}, c))))));
}

// "auditing at 40% until ±10%, now 10%": the adaptive audit rate (stats.audit_plan, selectors_quality.audit_rate_plan)
function auditPlanLine(plan) {
  if (!plan || plan.target === null || plan.target === undefined) return [];
  const r = (v) => `${Math.round(v * 100)}%`;
  return [el("div", {dataset: {stat: "audit-plan"}},
    `auditing at ${r(plan.base_rate)} until ±${r(plan.target)}, then ${r(plan.maintenance)}; next round ${r(plan.rate)}`)];
}

export function renderAccuracy(tile, acc, plan = null) {
  const best = acc && acc.best;
  const value = tile.querySelector("[data-stat=accuracy]");
  const detail = tile.querySelector("[data-stat=accuracy-detail]");
  if (!best) {
    value.textContent = "–";
    detail.replaceChildren("accuracy: no audit labels yet", ...auditPlanLine(plan));
    tile.dataset.estimator = "";
    return;
  }
  tile.dataset.estimator = best.key;
  // "± h" only while the interval is symmetric: clipped at 0% or 100% it would misstate an end.
  const clipped = best.low <= 0 || best.high >= 1;
  const v = Math.min(1, Math.max(0, best.value));  // the weighted estimate itself can leave [0, 1]
  value.textContent = clipped ? `${pct(v)} (${pct(best.low)}–${pct(best.high)})` : `${pct(v)} ± ${pct(best.half_width)}`;
  const sc = acc.scope;
  const range = (a) => (a[0] === a[1] ? `${a[0]}` : `${a[0]}–${a[1]}`);
  const one = sc && sc.rounds[0] === sc.rounds[1];
  const what = sc ? `estimates: how often ${one ? "the model of round" : "the models of rounds"} ` +
    `${range(sc.rounds)} (trained on ${range(sc.labels)} labels) agree with the team's final label, on the items ` +
    `not yet labeled when each served its batch${one ? "" : " (averaged; not the newest model alone)"}` : "";
  detail.replaceChildren(
    el("div", {}, `95% interval ${pct(best.low)}–${pct(best.high)} · ${best.n_labels} audit labels · ${best.short_name}`),
    el("div", {dataset: {stat: "accuracy-scope"}}, what),
    ...auditPlanLine(plan),
    ...(best.half_width > 0.1 && !(plan && plan.target) ? [el("div", {class: "warn"}, "wide: raise the project's audit rate")]
      : []));
  const other = best.key === "active_inference" ? acc.audit : null;
  tile.title = `${best.name}` +
    (other ? `\n${other.name}: ${pct(other.value)} (${pct(other.low)}–${pct(other.high)}, n=${other.n_labels})` : "");
}

export function renderQuality(box, q) {
  if (!q) {
    box.replaceChildren(el("p", {class: "muted"}, "No agreement report yet (computed after each round)."));
    return;
  }
  const parts = [el("p", {}, `${q.items_overlapped} of ${q.items_labeled} labeled items have two or more labels · `,
    "Krippendorff's α ", el("strong", {dataset: {stat: "alpha"}}, num(q.alpha, 3)))];
  if (q.annotators.length) {
    parts.push(table(["annotator", "labels", "overlapped", "Dawid–Skene accuracy", "agrees with consensus"],
      q.annotators.map((a) => [a.user, a.labels, a.overlapped, a.ds_accuracy === null ? "–" : pct(a.ds_accuracy),
        a.agreement_with_consensus === null ? "–" : pct(a.agreement_with_consensus)])));
  }
  if (q.pairs.length) {
    parts.push(el("h3", {}, "Cohen's κ per pair"),
      table(["pair", "shared items", "κ"], q.pairs.map((p) => [`${p.a} · ${p.b}`, p.items, num(p.kappa, 3)])));
  }
  for (const a of q.annotators) {
    if (!a.overlapped) continue;
    const rows = a.confusion.map((row, i) => [q.classes[i], ...row]);
    parts.push(el("details", {}, el("summary", {}, `${a.user}: confusion against the consensus (rows: consensus)`),
      table(["", ...q.classes], rows)));
  }
  box.replaceChildren(...parts);
}
