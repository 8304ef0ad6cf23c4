// Small SVG charts for the dashboard: a line chart with an interval band, and bar charts.
// No library: each function replaces the children of a container with one <svg> it draws.
//
//   lineChart(el, {points: [{x, y, lo, hi, title}], xLabel, yLabel, yMin: 0, yMax: 1, format})
//   barChart(el, {bars: [{label, value, title}], xLabel, yLabel, format, color})
//
// Sizes follow the container's width; the height is fixed per chart (data-height or 220 px).

const NS = "http://www.w3.org/2000/svg";
const M = {top: 12, right: 14, bottom: 42, left: 48};

function node(tag, attrs = {}, text) {
  const n = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
  if (text !== undefined) n.textContent = text;
  return n;
}

function frame(el) {
  const width = Math.max(240, el.clientWidth || 480);
  const height = Number(el.dataset.height || 220);
  const svg = node("svg", {viewBox: `0 0 ${width} ${height}`, width: "100%", height, role: "img",
                           class: "chart", "aria-label": el.dataset.label || el.getAttribute("aria-label") || "chart"});
  el.replaceChildren(svg);
  return {svg, width, height, w: width - M.left - M.right, h: height - M.top - M.bottom};
}

// "Nice" tick values covering [lo, hi] (Heckbert's labelling, simplified).
export function ticks(lo, hi, count = 5) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toFixed(10));
  return out;
}

// Ticks from lo up to the first "nice" value at or above hi: the axis top is never below the data, so the
// tallest bar is never clipped and two different values are never drawn at the same height.
export function ticksCovering(lo, hi, count = 5) {
  const t = ticks(lo, hi, count);
  if (t.length < 2) return hi > lo ? [lo, hi] : [lo, lo + 1];
  const step = t[1] - t[0];
  while (t[t.length - 1] < hi - step * 1e-9) t.push(+(t[t.length - 1] + step).toFixed(10));
  return t;
}

function axes(f, {xTicks, yTicks, x, y, xLabel, yLabel, fmtX = String, fmtY = String}) {
  const g = node("g", {class: "axes"});
  for (const t of yTicks) {
    const py = y(t);
    g.append(node("line", {x1: M.left, x2: M.left + f.w, y1: py, y2: py, class: "grid"}));
    g.append(node("text", {x: M.left - 6, y: py + 4, "text-anchor": "end", class: "tick"}, fmtY(t)));
  }
  for (const t of xTicks) {
    g.append(node("text", {x: x(t), y: M.top + f.h + 16, "text-anchor": "middle", class: "tick"}, fmtX(t)));
  }
  g.append(node("line", {x1: M.left, x2: M.left + f.w, y1: M.top + f.h, y2: M.top + f.h, class: "axis"}));
  if (xLabel) g.append(node("text", {x: M.left + f.w / 2, y: f.height - 6, "text-anchor": "middle",
                                     class: "label"}, xLabel));
  if (yLabel) g.append(node("text", {x: 12, y: M.top + f.h / 2, "text-anchor": "middle", class: "label",
                                     transform: `rotate(-90 12 ${M.top + f.h / 2})`}, yLabel));
  f.svg.append(g);
}

function empty(f, message) {
  f.svg.append(node("text", {x: f.width / 2, y: f.height / 2, "text-anchor": "middle", class: "empty"}, message));
}

export function lineChart(el, {points, xLabel, yLabel, yMin = 0, yMax = 1, format = (v) => v, emptyText}) {
  const f = frame(el);
  if (!points.length) {
    empty(f, emptyText || "no data yet");
    return f.svg;
  }
  const xs = points.map((p) => p.x);
  let x0 = Math.min(...xs), x1 = Math.max(...xs);
  if (x0 === x1) { x0 -= 1; x1 += 1; }
  const x = (v) => M.left + ((v - x0) / (x1 - x0)) * f.w;
  const y = (v) => M.top + (1 - (v - yMin) / (yMax - yMin)) * f.h;
  axes(f, {xTicks: ticks(x0, x1).filter((t) => Number.isInteger(t)), yTicks: ticks(yMin, yMax), x, y, xLabel,
           yLabel, fmtY: format});
  if (points.every((p) => p.lo !== undefined)) {
    const upper = points.map((p) => `${x(p.x)},${y(p.hi)}`);
    const lower = points.slice().reverse().map((p) => `${x(p.x)},${y(p.lo)}`);
    f.svg.append(node("polygon", {points: upper.concat(lower).join(" "), class: "band"}));
  }
  f.svg.append(node("polyline", {points: points.map((p) => `${x(p.x)},${y(p.y)}`).join(" "), class: "line"}));
  for (const p of points) {
    const c = node("circle", {cx: x(p.x), cy: y(p.y), r: 3.5, class: "dot"});
    if (p.title) c.append(node("title", {}, p.title));
    f.svg.append(c);
  }
  return f.svg;
}

export function barChart(el, {bars, xLabel, yLabel, format = (v) => v, emptyText, labelEvery = 1}) {
  const f = frame(el);
  const max = Math.max(0, ...bars.map((b) => b.value));
  if (!bars.length || max === 0) {
    empty(f, emptyText || "no data yet");
    return f.svg;
  }
  const yTicks = ticksCovering(0, max);
  const top = yTicks[yTicks.length - 1];
  const y = (v) => M.top + (1 - v / top) * f.h;
  const band = f.w / bars.length;
  const x = (i) => M.left + band * (i + 0.5);
  axes(f, {xTicks: [], yTicks, x, y, xLabel, yLabel, fmtY: format});
  bars.forEach((b, i) => {
    const bw = Math.max(1, Math.min(band * 0.72, 56));
    const r = node("rect", {x: x(i) - bw / 2, y: y(b.value), width: bw, height: Math.max(0, y(0) - y(b.value)),
                            class: `bar ${b.cls || ""}`});
    r.append(node("title", {}, b.title || `${b.label}: ${b.value}`));
    f.svg.append(r);
    if (i % labelEvery === 0) {
      const label = String(b.label);
      f.svg.append(node("text", {x: x(i), y: M.top + f.h + 16, "text-anchor": "middle", class: "tick"},
                        label.length > 10 ? label.slice(0, 9) + "…" : label));
    }
  });
  return f.svg;
}
