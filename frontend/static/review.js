// Review page: list labeled items with who labeled them; a reviewer corrects a label in place.
import {api, notify} from "./api.js";

const root = document.getElementById("review");
const urls = {items: root.dataset.itemsUrl, correct: root.dataset.correctUrl};  // from {% url %} in the page
const classes = JSON.parse(document.getElementById("classes-data").textContent);
const grid = document.getElementById("items");
const filters = root.querySelector(".filters");
let page = 1;
let pages = 1;

function card(it) {
  const el = document.createElement("div");
  el.className = "review-card";
  el.dataset.itemId = it.item_id;
  el.dataset.corrected = it.corrected;
  const img = document.createElement("img");
  img.src = it.image_url;
  img.alt = it.name;
  img.loading = "lazy";
  const who = document.createElement("div");
  who.className = "who muted";
  who.textContent = it.labels.map((l) => `${l.annotator}: ${l.label}${l.action === "correct" ? " (correction)" : ""}`).join(" · ")
    + (it.consensus ? ` → consensus ${it.label}` : "");
  el.dataset.suspect = it.suspect_score === null ? "" : it.suspect_score.toFixed(3);
  if (it.suspect_score !== null) who.title = `suspected-error score ${it.suspect_score.toFixed(3)}`;
  const sel = document.createElement("select");
  sel.name = "label";
  for (const c of classes) {
    const o = document.createElement("option");
    o.value = o.textContent = c;
    o.selected = c === it.label;
    sel.append(o);
  }
  const status = document.createElement("span");
  status.className = "saved";
  sel.addEventListener("change", async () => {
    status.textContent = "saving…";
    try {
      const data = await api(urls.correct, {item_id: it.item_id, label: sel.value});
      status.textContent = `corrected to ${data.label}`;
      status.classList.remove("error");
      el.dataset.corrected = "true";
    } catch (err) {
      sel.value = it.label;
      status.textContent = `not saved: ${err.message}`;  // next to the field it is about
      status.classList.add("error");
    }
  });
  el.append(img, who, sel, status);
  return el;
}

async function load() {
  const q = new URLSearchParams({page, annotator: filters.querySelector("[name=annotator]").value,
                                 label: filters.querySelector("[name=label]").value,
                                 sort: filters.querySelector("[name=sort]").value});
  let data;
  try {
    data = await api(`${urls.items}?${q}`);
  } catch (err) {
    notify(document.getElementById("notice"), `Could not load the labels: ${err.message}`, {kind: "error", ms: 0});
    return;
  }
  pages = data.pages;
  grid.replaceChildren(...data.items.map(card));
  document.getElementById("count").textContent = `${data.count} labeled items`;
  document.getElementById("page").textContent = `page ${data.page} of ${data.pages}`;
}

filters.addEventListener("change", () => { page = 1; load(); });
root.querySelector("[data-page=prev]").addEventListener("click", () => { if (page > 1) { page -= 1; load(); } });
root.querySelector("[data-page=next]").addEventListener("click", () => { if (page < pages) { page += 1; load(); } });
load();
