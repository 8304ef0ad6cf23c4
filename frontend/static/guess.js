// The "Model's guess" panel of the labeling page (label.js), as one list: the suggestion on top (the
// permanent #accept-btn: Enter accepts it, stored as "suggestion"), then the model's other likely
// classes, built here; row n also answers Shift+n and a click calls onPick(label) (stored as
// "candidate").  Without a suggestion the list holds the likely classes only, under a line saying why.
const $ = (id) => document.getElementById(id);

function guessRow(n, label, p, onPick) {
  const li = document.createElement("li");
  const b = document.createElement("button");
  b.type = "button";
  b.className = "candidate";
  b.dataset.label = label;
  b.dataset.candidate = String(n);
  const k = document.createElement("kbd");
  k.textContent = `⇧${n}`;
  const name = document.createElement("span");
  name.className = "name";
  name.textContent = label;
  const pc = document.createElement("span");
  pc.className = "p muted";
  pc.textContent = percent(p);
  b.append(k, name, pc);
  b.addEventListener("click", () => onPick(label));
  li.append(b);
  return li;
}

const percent = (p) => (p == null ? "" : p < 0.005 ? "<1%" : `${Math.round(p * 100)}%`);

export function showGuess(root, item, onPick) {
  const sug = item && item.suggestion;
  const cands = (item && item.candidates) || [];
  const rest = sug ? cands.filter((c) => c.label !== sug.label) : cands;
  $("guess").dataset.state = sug ? "on" : cands.length ? "candidates" : "none";
  const top = $("top-row");
  const accept = $("accept-btn");
  top.hidden = !sug;
  accept.disabled = !sug;
  accept.dataset.label = sug ? sug.label : "";
  accept.dataset.candidate = sug ? "1" : "";
  $("suggestion-label").textContent = sug ? sug.label : "–";
  $("suggestion-conf").textContent = sug ? percent(sug.confidence) : "";
  const first = sug ? 2 : 1;
  $("candidates").replaceChildren(top, ...rest.map((c, i) => guessRow(first + i, c.label, c.p, onPick)));
  const note = $("suggestion-note");
  note.hidden = !!sug;
  note.textContent = cands.length ? "Not sure; its likely classes:"
    : "No model guess for this item.";
  root.dataset.suggestion = sug ? sug.label : "";
  root.dataset.candidates = rest.length + (sug ? 1 : 0);
}

