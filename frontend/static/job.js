// Admin job page: follow a job's progress (polls the job API; also listens on the project's socket).
import {api} from "./api.js";
import {LiveSocket} from "./ws.js";

const box = document.getElementById("job");
const jobId = box.dataset.jobId;
const bar = box.querySelector("progress");
const state = box.querySelector("[data-field=status]");
const message = box.querySelector("[data-field=message]");
const result = box.querySelector("[data-field=result]");
const link = box.querySelector("[data-field=download]");
let finished = false;
const renderedFinished = box.dataset.state === "done" || box.dataset.state === "failed";

function show(j) {
  bar.value = j.progress || 0;
  state.textContent = j.status;
  box.dataset.state = j.status;
  message.textContent = j.status === "failed" ? j.error : j.message;
  if (j.result && Object.keys(j.result).length) result.textContent = JSON.stringify(j.result, null, 2);
  if (j.download) { link.href = j.download; link.hidden = false; }
  finished = j.status === "done" || j.status === "failed";
  // The page was rendered while the job ran: load it once more to show what it did, in words.
  if (finished && !renderedFinished) location.reload();
}

async function poll() {
  try {
    show(await api(box.dataset.url));
  } catch (err) {
    message.textContent = `Could not read the job: ${err.message}`;
  }
  if (!finished) setTimeout(poll, 1000);
}

new LiveSocket(box.dataset.wsUrl, {
  onMessage: (msg) => { if (msg.type === "job.progress" && msg.job.id === jobId && !finished) poll(); },
});
poll();
