// Uploading images to an app: a drop zone taking files AND folders (walked with the File System entries
// API), a file and a folder picker, and a queue that POSTs /inputs in batches of 32 base64 images, showing
// a progress bar, "D/N uploaded, R rejected, K duplicates" and each rejected file with the server's reason.
// Files over 20 MB are refused here (the request would be refused anyway, after a long upload); anything
// else, non-images included, is sent and the server says why it rejects it.
import { ApiError, appPath, fileBase64, post } from "./api.js";
import { $, el, errorText, toast } from "./ui.js";

export const BATCH = 32;                       // inputs per POST /inputs
export const MAX_FILE_BYTES = 20 * 1024 * 1024; // refused client-side
const MAX_BATCH_BYTES = 40 * 1024 * 1024;      // raw bytes per request (base64 adds a third; server caps 64 MB)

/** One file to send: the File, its path (folder/…/name) for the folder-name concept, or an error. */
const item = (file, path, error = null) => ({ file, path: path || (file ? file.name : ""), error });

/** Every file under a dropped entry (a directory is read in chunks until empty: readEntries pages). */
async function walk(entry, out) {
  if (entry.isFile) {
    await new Promise((resolve) => entry.file(
      (file) => { out.push(item(file, entry.fullPath.replace(/^\//, ""))); resolve(); },
      (err) => { out.push(item(null, entry.fullPath.replace(/^\//, ""), `cannot be read: ${err.message || err}`)); resolve(); }));
    return;
  }
  if (!entry.isDirectory) return;
  const reader = entry.createReader();
  for (;;) {
    const batch = await new Promise((resolve) => reader.readEntries(resolve, () => resolve([])));
    if (!batch.length) break;
    for (const child of batch) await walk(child, out);
  }
}

/** The files of a drop event: entries are taken synchronously (the DataTransfer empties after the event). */
export async function droppedFiles(dataTransfer) {
  const entries = [];
  const loose = [];
  for (const dtItem of Array.from(dataTransfer.items || [])) {
    if (dtItem.kind !== "file") continue;
    const entry = dtItem.webkitGetAsEntry ? dtItem.webkitGetAsEntry() : null;
    if (entry) entries.push(entry);
    else { const f = dtItem.getAsFile(); if (f) loose.push(item(f, f.name)); }
  }
  if (!entries.length && !loose.length) for (const f of Array.from(dataTransfer.files || [])) loose.push(item(f, f.name));
  const out = [...loose];
  for (const entry of entries) await walk(entry, out);
  return out;
}

/** The parent folder's name of a path ("shoes/left/a.png" -> "left"); none for a bare file name. */
export function folderOf(path) {
  const parts = String(path || "").split("/").filter(Boolean);
  return parts.length >= 2 ? parts[parts.length - 2] : "";
}

/** Split the files into requests: at most BATCH files and MAX_BATCH_BYTES each. */
function batches(items) {
  const out = [];
  let current = [];
  let bytes = 0;
  for (const it of items) {
    const size = it.file ? it.file.size : 0;
    if (current.length && (current.length >= BATCH || bytes + size > MAX_BATCH_BYTES)) { out.push(current); current = []; bytes = 0; }
    current.push(it);
    bytes += size;
  }
  if (current.length) out.push(current);
  return out;
}

/** What became of one sent input: imported, duplicate or rejected (with the server's reason). */
function outcomeOf(rendered) {
  const native = rendered && rendered.data && rendered.data.metadata && rendered.data.metadata.deeptrain;
  const code = rendered && rendered.status ? rendered.status.code : 0;
  const kind = (native && native.outcome) || (code === 30000 ? "imported" : code === 30100 ? "duplicate" : "rejected");
  const reason = (native && native.reason) || (rendered && rendered.status && rendered.status.description) || "rejected";
  return { kind, reason };
}

/** The upload controls of the inputs page; onDone() runs after each finished upload (refresh the grid). */
export function initUpload(appId, { onDone } = {}) {
  const drop = $("#drop");
  const fileInput = $("#file-input");
  const folderInput = $("#folder-input");
  const bar = $("#upload-progress");
  const statusLine = $("#upload-status");
  const rejectedList = $("#upload-rejected");
  let running = false;
  const state = { total: 0, done: 0, rejected: 0, duplicates: 0 };

  const show = () => {
    bar.max = Math.max(1, state.total);
    bar.value = state.done;
    statusLine.textContent = `${state.done}/${state.total} uploaded, ${state.rejected} rejected, ${state.duplicates} duplicates`;
  };
  const reject = (it, reason) => {
    state.rejected += 1;
    const name = it.file ? it.file.name : it.path.split("/").pop();
    rejectedList.append(el("li", { title: it.path }, el("span", { class: "file" }, name), `: ${reason}`));
  };

  async function send(batch, options) {
    const sent = [];
    const inputs = [];
    for (const it of batch) {
      if (it.error) { reject(it, it.error); continue; }
      if (it.file.size > MAX_FILE_BYTES) {
        reject(it, `over the 20 MB limit (${(it.file.size / 1048576).toFixed(1)} MB): not sent`);
        continue;
      }
      let b64;
      try { b64 = await fileBase64(it.file); } catch (err) { reject(it, `cannot be read: ${errorText(err)}`); continue; }
      const concepts = [options.concept, options.folderConcepts ? folderOf(it.path) : ""]
        .filter(Boolean).filter((c, i, all) => all.indexOf(c) === i).map((id) => ({ id, value: 1 }));
      const input = { data: { image: { base64: b64 }, concepts } };
      if (options.split) input.split = options.split;
      inputs.push(input);
      sent.push(it);
    }
    if (inputs.length) {
      let answer;
      try {
        answer = await post(appPath(appId, "/inputs"), { inputs });
      } catch (err) {  // all rejected (400 with each input's outcome) or the request itself failed
        if (err instanceof ApiError && err.body && Array.isArray(err.body.inputs)) answer = err.body;
        else { for (const it of sent) reject(it, errorText(err)); answer = null; }
      }
      (answer ? answer.inputs || [] : []).forEach((rendered, i) => {
        if (!sent[i]) return;
        const { kind, reason } = outcomeOf(rendered);
        if (kind === "duplicate") state.duplicates += 1;
        else if (kind === "rejected") reject(sent[i], reason);
      });
    }
    state.done += batch.length;
    show();
  }

  async function run(items) {
    if (!items.length) return;
    if (running) { toast("An upload is already running: wait for it to finish", "error"); return; }
    running = true;
    Object.assign(state, { total: items.length, done: 0, rejected: 0, duplicates: 0 });
    rejectedList.replaceChildren();
    $("#upload-panel").hidden = false;
    drop.classList.add("busy");
    show();
    const options = {
      split: $("#upload-split").value,
      concept: $("#upload-concept").value.trim(),
      folderConcepts: $("#folder-concepts").checked,
    };
    try {
      for (const batch of batches(items)) await send(batch, options);
      const imported = state.total - state.rejected - state.duplicates;
      toast(`${imported} input${imported === 1 ? "" : "s"} added` + (state.rejected ? `, ${state.rejected} rejected` : ""),
        state.rejected && !imported ? "error" : "ok");
    } finally {
      running = false;
      drop.classList.remove("busy");
      if (onDone) await onDone();
    }
  }

  const fromInput = (input) => {
    const items = Array.from(input.files || []).map((f) => item(f, f.webkitRelativePath || f.name));
    input.value = "";
    run(items);
  };
  fileInput.addEventListener("change", () => fromInput(fileInput));
  folderInput.addEventListener("change", () => fromInput(folderInput));
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (e) => { e.preventDefault(); e.dataTransfer.dropEffect = "copy"; drop.classList.add("over"); });
  }
  drop.addEventListener("dragleave", (e) => { if (!drop.contains(e.relatedTarget)) drop.classList.remove("over"); });
  drop.addEventListener("drop", async (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    run(await droppedFiles(e.dataTransfer));
  });
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); fileInput.click(); } });
  return { run };
}
