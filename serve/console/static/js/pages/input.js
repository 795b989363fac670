// The labeller: one input's image with its boxes (boxes.js: draw, move, resize, delete), the concept for new
// boxes (keys 1–9), the whole-image labels (chips cycling none -> positive -> negative; keys p and n), and
// next/previous following the grid's filters and position (?concept_id=&split=&labelled=&pos=). Every change
// is saved through the API at once; #saved says "saved" or the error.
import { ApiError, appPath, del, get, imageUrl, patch, post } from "../api.js";
import { $, el, errorText, guard, page, shell, showError, toast } from "../ui.js";
import { BoxEditor, fromRegion, toRegion } from "../boxes.js";

const PER_PAGE = 60;  // the grid's page size (the way back lands on the right page)
const PALETTE = ["#2457c5", "#e0552d", "#1f8a4c", "#9b3fc2", "#c58a00", "#0e8a9b", "#c53070", "#5a6b1f", "#6b4f2a"];
const app = page.app;
const inputId = page.input;
const query = new URLSearchParams(location.search);
const filters = {};
for (const k of ["concept_id", "split", "labelled"]) if (query.get(k)) filters[k] = query.get(k);
let pos = query.has("pos") && /^\d+$/.test(query.get("pos")) ? Number(query.get("pos")) : null;
let concepts = [];
let labels = new Map();  // concept id -> true (positive) | false (negative)
let editor = null;
let navigating = false;

const inputPath = (rest = "") => appPath(app, `/inputs/${encodeURIComponent(inputId)}${rest}`);
const colorOf = (concept) => {
  const i = concepts.findIndex((c) => c.id === concept);
  return PALETTE[(i < 0 ? 0 : i) % PALETTE.length];
};
const current = () => $("#box-concept").value;
const CURRENT_KEY = `deeptrain.labeller.concept.${app}`;
const remembered = sessionStorage.getItem(CURRENT_KEY);  // the concept picked on the previous input

function saved(err) {
  const node = $("#saved");
  node.classList.remove("ok", "error", "flash");
  if (err) { node.textContent = errorText(err); node.classList.add("error"); return; }
  node.textContent = "saved";
  node.classList.add("ok");
  void node.offsetWidth;  // restart the flash animation
  node.classList.add("flash");
}

/** Run one change against the API: "saved" or its error in #saved; the answer or undefined. */
async function save(action) {
  try {
    const out = await action();
    saved(null);
    return out;
  } catch (err) {
    if (err && err.name === "AbortError") return undefined;
    saved(err);
    return undefined;
  }
}

// --- concepts and whole-image labels -------------------------------------------------------------------

function renderConcepts(keep) {
  const select = $("#box-concept");
  keep = keep || select.value || remembered;
  select.replaceChildren(...(concepts.length ? concepts.map((c, i) => el("option", { value: c.id },
    `${i < 9 ? `${i + 1} · ` : ""}${c.name && c.name !== c.id ? c.name : c.id}`))
    : [el("option", { value: "" }, "no concepts: add one below")]));
  if (keep && concepts.some((c) => c.id === keep)) select.value = keep;
  $("#shortcut-list").replaceChildren(...concepts.slice(0, 9).map((c, i) => el("li", { dataset: { concept: c.id } },
    el("span", { class: "kbd" }, String(i + 1)), el("span", { class: "swatch", dataset: { i: String(i % PALETTE.length) } }),
    el("span", {}, c.name && c.name !== c.id ? c.name : c.id))));
  for (const sw of document.querySelectorAll("#shortcut-list .swatch")) sw.style.background = PALETTE[Number(sw.dataset.i)];
  renderLabels();
  highlightCurrent();
}

function highlightCurrent() {
  if (current()) sessionStorage.setItem(CURRENT_KEY, current());
  for (const li of document.querySelectorAll("#shortcut-list li")) li.classList.toggle("current", li.dataset.concept === current());
  for (const chip of document.querySelectorAll("#labels .label-chip")) chip.classList.toggle("current", chip.dataset.concept === current());
}

function renderLabels() {
  const chips = concepts.map((c, i) => {
    const state = labels.has(c.id) ? (labels.get(c.id) ? "positive" : "negative") : "none";
    const mark = { positive: "✓", negative: "✕", none: "" }[state];
    return el("button", { type: "button", class: "label-chip", dataset: { concept: c.id, state },
      title: `${c.id}: ${state} (click to change)`, "aria-pressed": state === "none" ? "false" : "true" },
    i < 9 ? el("span", { class: "chip-key" }, String(i + 1)) : null,
    el("span", { class: "chip-name" }, c.name && c.name !== c.id ? c.name : c.id),
    mark ? el("span", { class: "chip-mark" }, mark) : null);
  });
  $("#labels").replaceChildren(...(chips.length ? chips : [el("span", { class: "muted small" }, "No concepts yet.")]));
  highlightCurrent();
}

function labelsOf(input) {
  labels = new Map(((input.data && input.data.concepts) || []).map((c) => [c.id, c.value > 0]));
}

/** Give the input the whole-image label `state` (positive | negative | none) of `concept`. */
async function setLabel(concept, state) {
  if (!concept) { saved(new Error("pick or add a concept first")); return; }
  const body = state === "none"
    ? { action: "remove", inputs: [{ id: inputId, data: { concepts: [{ id: concept }] } }] }
    : { action: "merge", inputs: [{ id: inputId, data: { concepts: [{ id: concept, value: state === "positive" ? 1 : 0 }] } }] };
  const answer = await save(() => patch(appPath(app, "/inputs"), body));
  if (answer && answer.inputs && answer.inputs[0]) labelsOf(answer.inputs[0]);
  renderLabels();
}

const NEXT_STATE = { none: "positive", positive: "negative", negative: "none" };
const stateOf = (concept) => (labels.has(concept) ? (labels.get(concept) ? "positive" : "negative") : "none");

async function loadConcepts(keep) {
  const data = await guard(() => get(appPath(app, "/concepts"), { per_page: 1000 }));
  if (data) concepts = data.concepts || [];
  renderConcepts(keep);
}

async function addConcept(event) {
  event.preventDefault();
  const input = $("#add-box-concept");
  const id = input.value.trim();
  if (!id) return;
  let made = id;
  try {
    const answer = await post(appPath(app, "/concepts"), { concepts: [{ id }] });
    made = answer.concepts[0].id;
  } catch (err) {
    if (!(err instanceof ApiError && err.httpStatus === 409)) { saved(err); return; }  // exists already: use it
  }
  input.value = "";
  await loadConcepts(made);
  $("#box-concept").value = made;
  highlightCurrent();
  toast(`concept ${made} ready`);
}

function pickConcept(index) {
  const c = concepts[index];
  if (!c) return;
  $("#box-concept").value = c.id;
  highlightCurrent();
  const box = editor && editor.selected;
  if (box && box.concept !== c.id) changeBox({ ...box, concept: c.id }, box);
}

// --- boxes ----------------------------------------------------------------------------------------------

async function createBox(box) {
  const concept = current();
  if (!concept) { saved(new Error("pick or add a concept before drawing a box")); return; }
  const answer = await save(() => post(appPath(app, "/annotations"),
    { annotations: [{ input_id: inputId, data: { regions: [toRegion(box, concept)] } }] }));
  const made = answer && answer.annotations && answer.annotations[0];
  if (!made) return;
  const region = made.data && made.data.regions && made.data.regions[0];
  const stored = region ? { ...fromRegion(region), id: String(made.id) } : { ...box, id: String(made.id), concept };
  editor.upsert(stored);
  editor.select(stored.id);
}

async function changeBox(box, before) {
  const answer = await save(() => patch(appPath(app, "/annotations"), { action: "overwrite",
    annotations: [{ id: box.id, input_id: inputId, data: { regions: [toRegion(box, box.concept)] } }] }));
  const kept = answer && answer.annotations && answer.annotations[0];
  const region = kept && kept.data && kept.data.regions && kept.data.regions[0];
  editor.upsert(region ? { ...fromRegion(region), id: box.id } : before);  // a refusal puts it back
}

async function deleteBox() {
  const box = editor && editor.selected;
  if (!box) return;
  const done = await save(() => del(inputPath(`/annotations/${encodeURIComponent(box.id)}`)));
  if (done) editor.remove(box.id);
}

// --- the input ------------------------------------------------------------------------------------------

function info(input) {
  const image = (input.data && input.data.image && input.data.image.image_info) || {};
  const meta = (input.data && input.data.metadata && input.data.metadata.deeptrain) || {};
  const rows = [["id", el("code", {}, input.id)], ["size", `${image.width}×${image.height}${image.format ? ` ${image.format}` : ""}`],
    ["split", meta.split || "none"]];
  $("#input-info").replaceChildren(...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
}

/** Show the image as large as the column allows (small images scaled up, pixelated), then the boxes. */
function fit() {
  const img = $("#image");
  if (!img.naturalWidth) return;
  const card = $(".stage-card");
  const maxW = Math.max(200, card.clientWidth - 34);
  const maxH = Math.max(240, window.innerHeight - 220);
  const scale = Math.min(maxW / img.naturalWidth, maxH / img.naturalHeight, 24);
  img.style.width = `${Math.round(img.naturalWidth * scale)}px`;
  img.style.height = `${Math.round(img.naturalHeight * scale)}px`;
  img.classList.toggle("pixelated", scale >= 3);
  if (editor) editor.render();
}

async function loadImage() {
  const img = $("#image");
  const loaded = new Promise((resolve) => { img.onload = resolve; img.onerror = resolve; });
  try {
    img.src = await imageUrl(inputPath("/image"));
  } catch (err) {
    saved(err);
    return false;
  }
  await loaded;
  if (!img.naturalWidth) {  // a format the browser cannot show (TIFF): the server's PNG rendering
    const again = new Promise((resolve) => { img.onload = resolve; img.onerror = resolve; });
    img.src = await imageUrl(inputPath("/image"), { size: 1024 });
    await again;
  }
  fit();
  return true;
}

// --- navigation -----------------------------------------------------------------------------------------

async function itemAt(index) {
  if (index < 0) return null;
  const data = await get(appPath(app, "/inputs"), { page: index + 1, per_page: 1, ...filters });
  return (data.inputs || [])[0] || null;
}

/** Where this input is in the (filtered) id-ordered list, when the page was opened without ?pos=. */
async function findPos() {
  const counts = await get(appPath(app, "/inputs/counts"), filters);
  let lo = 0;
  let hi = counts.counts.matching;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    const it = await itemAt(mid);
    if (!it || it.id >= inputId) hi = mid; else lo = mid + 1;
  }
  return lo;
}

function go(target, index) {
  const q = new URLSearchParams({ ...filters, pos: String(index) });
  location.assign(`/apps/${encodeURIComponent(app)}/inputs/${encodeURIComponent(target.id)}?${q}`);
}

async function step(delta) {
  if (navigating) return;
  navigating = true;
  try {
    if (pos === null) pos = await findPos();
    if (delta > 0) {
      const here = await itemAt(pos);  // this input may have left the filter (e.g. "unlabelled" once labelled)
      if (here && here.id !== inputId && here.id > inputId) { go(here, pos); return; }
      const next = await itemAt(pos + 1);
      if (next) { go(next, pos + 1); return; }
      toast("This is the last input");
    } else {
      const prev = await itemAt(pos - 1);
      if (prev) { go(prev, pos - 1); return; }
      toast("This is the first input");
    }
  } catch (err) {
    saved(err);
  }
  navigating = false;
}

function backLink() {
  const q = new URLSearchParams({ page: String(pos === null ? 1 : Math.floor(pos / PER_PAGE) + 1), ...filters });
  $("#back-to-grid").href = `/apps/${encodeURIComponent(app)}/inputs?${q}`;
}

async function showPosition() {
  $("#prev").disabled = pos === 0;
  const counts = await get(appPath(app, "/inputs/counts"), filters).catch(() => null);
  const total = counts && counts.counts ? counts.counts.matching : null;
  if (pos !== null && total !== null) $("#position").textContent = `${Math.min(pos + 1, total)} / ${total}`;
}

// --- keyboard -------------------------------------------------------------------------------------------

function toggleHelp() {
  const dialog = $("#shortcut-help");
  if (dialog.open) dialog.close(); else dialog.showModal();
}

function onKey(event) {
  const t = event.target;
  if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT" || t.isContentEditable)) return;
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  if ($("#shortcut-help").open && event.key !== "?" && event.key !== "Escape") return;
  const key = event.key;
  let handled = true;
  if (/^[1-9]$/.test(key)) pickConcept(Number(key) - 1);
  else if (key === "p") setLabel(current(), stateOf(current()) === "positive" ? "none" : "positive");
  else if (key === "n") setLabel(current(), stateOf(current()) === "negative" ? "none" : "negative");
  else if (key === "ArrowRight" || key === "j") step(1);
  else if (key === "ArrowLeft" || key === "k") step(-1);
  else if (key === "Delete" || key === "Backspace") deleteBox();
  else if (key === "Escape") { if ($("#shortcut-help").open) $("#shortcut-help").close(); else editor.select(null); }
  else if (key === "?") toggleHelp();
  else handled = false;
  if (handled) event.preventDefault();
}

// --- start ----------------------------------------------------------------------------------------------

function wire() {
  editor = new BoxEditor($("#boxes"), $("#image"), { onCreate: createBox, onChange: changeBox, colorOf });
  $("#box-concept").addEventListener("change", (e) => { highlightCurrent(); e.target.blur(); });
  $("#add-box-concept-form").addEventListener("submit", addConcept);
  $("#labels").addEventListener("click", (e) => {
    const chip = e.target.closest(".label-chip");
    if (chip) setLabel(chip.dataset.concept, NEXT_STATE[chip.dataset.state]);
  });
  $("#shortcut-list").addEventListener("click", (e) => {
    const li = e.target.closest("li[data-concept]");
    if (li) pickConcept(concepts.findIndex((c) => c.id === li.dataset.concept));
  });
  $("#prev").addEventListener("click", () => step(-1));
  $("#next").addEventListener("click", () => step(1));
  $("#show-help").addEventListener("click", toggleHelp);
  document.addEventListener("keydown", onKey);
  window.addEventListener("resize", fit);
}

if (await shell()) {
  wire();
  backLink();
  const [input] = await Promise.all([
    get(inputPath()).then((d) => d.input).catch((err) => { saved(err); showError(err); return null; }),
    loadConcepts(),
  ]);
  if (input) {
    labelsOf(input);
    info(input);
    renderLabels();
    const boxes = ((input.data && input.data.regions) || []).map(fromRegion);
    if (await loadImage()) editor.setBoxes(boxes);
  } else {
    $("#image").hidden = true;
    $("#stage").classList.add("missing");
    $("#stage").append(el("div", { class: "stage-message" }, "This input could not be loaded."));
  }
  await showPosition();
  document.body.dataset.ready = "1";
}
