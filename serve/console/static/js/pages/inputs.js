// The inputs page: the app's concepts with their counts, a paged thumbnail grid (60 a page, thumbnails made
// by the listing itself: ?thumbnail=128) filtered by concept, split and labelled, with the page and filters
// in the URL; selection (click, shift-click range, whole page) and bulk labelling or deletion; uploads
// (upload.js). Double-click or Enter on a thumbnail opens the labeller at that position of the filtered list.
import { appPath, del, get, imageUrl, patch, post } from "../api.js";
import { $, $$, clearErrors, el, errorText, fmtInt, guard, page, pager, shell, showError, toast } from "../ui.js";
import { initUpload } from "../upload.js";

const PER_PAGE = 60;
const THUMB = 128;
const CHUNK = 128;  // ids per PATCH / DELETE request (the server's limit)
const SPLITS = ["", "train", "validation", "test", "none"];
const LABELLED = ["", "true", "false"];
const app = page.app;
const state = { page: 1, concept_id: "", split: "", labelled: "" };
const selected = new Set();
let items = [];          // the inputs shown
let anchor = null;       // index of the last clicked thumbnail (shift-click ranges)
let objectUrls = [];     // fallback thumbnails to free on the next page
let loadSeq = 0;         // the newest grid load wins
let concepts = [];

// --- URL state --------------------------------------------------------------------------------------------

function readUrl() {
  const q = new URLSearchParams(location.search);
  state.page = Math.max(1, parseInt(q.get("page") || "1", 10) || 1);
  state.concept_id = q.get("concept_id") || "";
  state.split = SPLITS.includes(q.get("split") || "") ? q.get("split") || "" : "";
  state.labelled = LABELLED.includes(q.get("labelled") || "") ? q.get("labelled") || "" : "";
}

function filters() {
  const out = {};
  for (const k of ["concept_id", "split", "labelled"]) if (state[k]) out[k] = state[k];
  return out;
}

function writeUrl(push) {
  const q = new URLSearchParams({ page: String(state.page), ...filters() });
  const url = `${location.pathname}?${q}`;
  if (url !== location.pathname + location.search) history[push ? "pushState" : "replaceState"](null, "", url);
}

function syncFilterControls() {
  ensureConceptOption(state.concept_id);
  $("#filter-concept").value = state.concept_id;
  $("#filter-split").value = state.split;
  $("#filter-labelled").value = state.labelled;
  for (const li of $$("#concepts li[data-concept]")) {
    const on = li.dataset.concept === state.concept_id;
    li.classList.toggle("active", on);
    if (on) li.setAttribute("aria-current", "true"); else li.removeAttribute("aria-current");
  }
}

function setFilter(name, value) {
  state[name] = value;
  state.page = 1;
  writeUrl(true);
  syncFilterControls();
  loadGrid();
}

// --- concepts ---------------------------------------------------------------------------------------------

function ensureConceptOption(id) {
  const select = $("#filter-concept");
  if (id && !$$("option", select).some((o) => o.value === id)) select.append(el("option", { value: id }, id));
}

function conceptItem(c) {
  const meta = (c.metadata && c.metadata.deeptrain) || {};
  const labels = meta.num_labels ?? 0;
  const boxes = meta.num_boxes ?? 0;
  return el("li", { dataset: { concept: c.id }, tabindex: 0, role: "button", title: `show the inputs of ${c.id}` },
    el("span", { class: "concept-name" }, c.name && c.name !== c.id ? c.name : c.id,
      c.name && c.name !== c.id ? el("span", { class: "muted mono concept-id" }, c.id) : null),
    el("span", { class: "concept-counts" },
      el("span", { class: "count-pill", title: `${labels} positive labels` }, fmtInt(labels)),
      el("span", { class: "count-pill boxes", title: `${boxes} boxes` }, fmtInt(boxes))));
}

async function loadConcepts() {
  const data = await guard(() => get(appPath(app, "/concepts"), { per_page: 1000 }));
  if (!data) return;
  concepts = data.concepts || [];
  const list = $("#concepts");
  list.replaceChildren(...(concepts.length ? concepts.map(conceptItem)
    : [el("li", { class: "muted empty-note" }, "No concepts yet: add one below or label inputs.")]));
  const select = $("#filter-concept");
  select.replaceChildren(el("option", { value: "" }, "all"),
    ...concepts.map((c) => el("option", { value: c.id }, c.name && c.name !== c.id ? `${c.name} (${c.id})` : c.id)));
  $("#concept-options").replaceChildren(...concepts.map((c) => el("option", { value: c.id })));
  syncFilterControls();
}

async function newConcept(event) {
  event.preventDefault();
  const form = event.currentTarget;
  clearErrors(form);
  const id = $("#concept-id", form).value.trim();
  try {
    await post(appPath(app, "/concepts"), { concepts: [{ id }] });
  } catch (err) {
    showError(err, form);
    return;
  }
  toast(`concept ${id} created`);
  form.reset();
  await loadConcepts();
}

// --- grid -------------------------------------------------------------------------------------------------

function captionOf(input) {
  const data = input.data || {};
  const pos = (data.concepts || []).filter((c) => c.value > 0).map((c) => c.id);
  const neg = (data.concepts || []).filter((c) => !(c.value > 0)).map((c) => `¬${c.id}`);
  const boxes = new Set((data.regions || []).flatMap((r) => ((r.data && r.data.concepts) || []).map((c) => c.id)));
  const words = [...pos, ...[...boxes].filter((c) => !pos.includes(c)).map((c) => `▭${c}`), ...neg];
  return words.length ? words.join(", ") : "";
}

function thumbOf(input, index) {
  const split = ((input.data && input.data.metadata && input.data.metadata.deeptrain) || {}).split;
  const img = el("img", { alt: input.id, loading: "lazy", decoding: "async", draggable: "false" });
  if (input.thumbnail) img.src = input.thumbnail;
  const caption = captionOf(input);
  return el("div", {
    class: "thumb", role: "option", tabindex: 0, dataset: { id: input.id, index: String(index) },
    "aria-selected": selected.has(input.id) ? "true" : "false", title: `${input.id}${caption ? ` · ${caption}` : ""}`,
  }, img, split ? el("span", { class: `split-tag ${split}` }, split === "validation" ? "val" : split) : null,
  el("div", { class: caption ? "caption" : "caption unlabelled" }, caption || "unlabelled"));
}

/** Thumbnails the listing did not carry (a server without ?thumbnail=): the image route, a few at a time. */
async function fallbackThumbs(nodes, seq) {
  const queue = nodes.slice();
  const worker = async () => {
    while (queue.length && seq === loadSeq) {
      const [node, id] = queue.shift();
      try {
        const url = await imageUrl(appPath(app, `/inputs/${encodeURIComponent(id)}/image`), { size: THUMB });
        if (seq !== loadSeq) { URL.revokeObjectURL(url); return; }
        objectUrls.push(url);
        node.src = url;
      } catch { node.alt = "no preview"; }
    }
  };
  await Promise.all(Array.from({ length: 6 }, worker));
}

async function loadGrid() {
  const seq = ++loadSeq;
  const grid = $("#grid");
  grid.classList.add("loading");
  const params = { page: state.page, per_page: PER_PAGE, thumbnail: THUMB, ...filters() };
  const [list, counts] = await Promise.allSettled([
    get(appPath(app, "/inputs"), params),
    get(appPath(app, "/inputs/counts"), filters()),
  ]);
  if (seq !== loadSeq) return;
  grid.classList.remove("loading");
  const total = counts.status === "fulfilled" && counts.value.counts ? counts.value.counts.matching : undefined;
  $("#count").textContent = total === undefined ? "" : `${fmtInt(total)} input${total === 1 ? "" : "s"}`;
  if (total !== undefined && total > 0 && state.page > Math.ceil(total / PER_PAGE)) {  // e.g. after a delete
    state.page = Math.ceil(total / PER_PAGE);
    writeUrl(false);
    loadGrid();
    return;
  }
  for (const url of objectUrls) URL.revokeObjectURL(url);
  objectUrls = [];
  if (list.status === "rejected") {
    items = [];
    grid.replaceChildren(el("div", { class: "empty" }, `The inputs could not be listed: ${errorText(list.reason)}`));
    updatePager(total);
    showError(list.reason);
    return;
  }
  items = list.value.inputs || [];
  anchor = null;
  if (!items.length) {
    const any = Object.keys(filters()).length;
    grid.replaceChildren(el("div", { class: "empty" }, any ? "No inputs match these filters."
      : "No inputs yet: drop images or folders in the upload box above."));
  } else {
    grid.replaceChildren(...items.map(thumbOf));
  }
  updatePager(total);
  updateSelection();
  const missing = items.filter((i) => !i.thumbnail).map((i) => [$(`.thumb[data-id="${CSS.escape(i.id)}"] img`, grid), i.id]);
  if (missing.length) fallbackThumbs(missing, seq);
}

function updatePager(total) {
  const onPage = (p) => { state.page = p; writeUrl(true); loadGrid(); };
  pager($("#pager"), { page: state.page, perPage: PER_PAGE, total, onPage });
  if (total !== undefined) return;  // no count (an older server): a full page may have a next one
  const next = $('#pager button[aria-label="next page"]');
  next.replaceWith(el("button", { type: "button", "aria-label": "next page", disabled: items.length < PER_PAGE,
    onclick: () => onPage(state.page + 1) }, "›"));
}

// --- selection --------------------------------------------------------------------------------------------

function updateSelection() {
  for (const node of $$("#grid .thumb")) node.setAttribute("aria-selected", selected.has(node.dataset.id) ? "true" : "false");
  $("#selection-count").textContent = `${fmtInt(selected.size)} selected`;
  const none = selected.size === 0;
  for (const id of ["#clear-selection", "#add-positive", "#add-negative", "#remove-concept", "#delete-selected"]) $(id).disabled = none;
}

function toggle(index, range) {
  if (range && anchor !== null) {
    const [a, b] = anchor < index ? [anchor, index] : [index, anchor];
    for (let i = a; i <= b; i += 1) selected.add(items[i].id);
  } else {
    const id = items[index].id;
    if (selected.has(id)) selected.delete(id); else selected.add(id);
  }
  anchor = index;
  updateSelection();
}

function open(index) {
  const input = items[index];
  if (!input) return;
  const q = new URLSearchParams({ ...filters(), pos: String((state.page - 1) * PER_PAGE + index) });
  location.assign(`/apps/${encodeURIComponent(app)}/inputs/${encodeURIComponent(input.id)}?${q}`);
}

function thumbIndex(event) {
  const node = event.target.closest(".thumb");
  return node ? Number(node.dataset.index) : -1;
}

function gridKeys(event) {
  const index = thumbIndex(event);
  if (index < 0) return;
  const moves = { ArrowRight: 1, ArrowLeft: -1 };
  if (event.key === "Enter") { event.preventDefault(); open(index); return; }
  if (event.key === " ") { event.preventDefault(); toggle(index, event.shiftKey); return; }
  let step = moves[event.key];
  if (event.key === "ArrowDown" || event.key === "ArrowUp") {
    const columns = getComputedStyle($("#grid")).gridTemplateColumns.split(" ").length || 1;
    step = event.key === "ArrowDown" ? columns : -columns;
  }
  if (step === undefined) return;
  event.preventDefault();
  const next = $(`#grid .thumb[data-index="${Math.min(items.length - 1, Math.max(0, index + step))}"]`);
  if (next) next.focus();
}

// --- bulk actions -----------------------------------------------------------------------------------------

function chunks(list) {
  const out = [];
  for (let i = 0; i < list.length; i += CHUNK) out.push(list.slice(i, i + CHUNK));
  return out;
}

async function bulkLabel(action, value) {
  const input = $("#bulk-concept");
  const concept = input.value.trim();
  if (!concept) { input.setAttribute("aria-invalid", "true"); input.focus(); toast("Type a concept for the selection first", "error"); return; }
  input.removeAttribute("aria-invalid");
  const ids = [...selected];
  const done = await guard(async () => {
    for (const part of chunks(ids)) {
      const concepts = [action === "remove" ? { id: concept } : { id: concept, value }];
      await patch(appPath(app, "/inputs"), { action, inputs: part.map((id) => ({ id, data: { concepts } })) });
    }
    return true;
  });
  if (done) {
    const what = action === "remove" ? `removed ${concept} from` : `labelled ${value ? "" : "not "}${concept}:`;
    toast(`${what} ${fmtInt(ids.length)} input${ids.length === 1 ? "" : "s"}`);
  }
  await Promise.all([loadConcepts(), loadGrid()]);
}

async function deleteSelected() {
  const ids = [...selected];
  if (!ids.length || !confirm(`Delete ${ids.length} input${ids.length === 1 ? "" : "s"} with their labels and images?`)) return;
  let deleted = 0;
  await guard(async () => {
    for (const part of chunks(ids)) {
      await del(appPath(app, "/inputs"), { ids: part });
      for (const id of part) selected.delete(id);
      deleted += part.length;
    }
  });
  if (deleted) toast(`${fmtInt(deleted)} input${deleted === 1 ? "" : "s"} deleted`);
  await Promise.all([loadConcepts(), loadGrid()]);
}

// --- wiring -----------------------------------------------------------------------------------------------

function wire() {
  $("#new-concept").addEventListener("submit", newConcept);
  $("#filter-concept").addEventListener("change", (e) => setFilter("concept_id", e.target.value));
  $("#filter-split").addEventListener("change", (e) => setFilter("split", e.target.value));
  $("#filter-labelled").addEventListener("change", (e) => setFilter("labelled", e.target.value));
  const pickConcept = (li) => setFilter("concept_id", state.concept_id === li.dataset.concept ? "" : li.dataset.concept);
  $("#concepts").addEventListener("click", (e) => { const li = e.target.closest("li[data-concept]"); if (li) pickConcept(li); });
  $("#concepts").addEventListener("keydown", (e) => {
    const li = e.target.closest("li[data-concept]");
    if (li && (e.key === "Enter" || e.key === " ")) { e.preventDefault(); pickConcept(li); }
  });
  const grid = $("#grid");
  grid.addEventListener("click", (e) => { const i = thumbIndex(e); if (i >= 0) toggle(i, e.shiftKey); });
  grid.addEventListener("mousedown", (e) => { if (e.shiftKey) e.preventDefault(); });  // no text selection
  grid.addEventListener("dblclick", (e) => { const i = thumbIndex(e); if (i >= 0) open(i); });
  grid.addEventListener("keydown", gridKeys);
  $("#select-page").addEventListener("click", () => { for (const i of items) selected.add(i.id); updateSelection(); });
  $("#clear-selection").addEventListener("click", () => { selected.clear(); anchor = null; updateSelection(); });
  $("#add-positive").addEventListener("click", () => bulkLabel("merge", 1));
  $("#add-negative").addEventListener("click", () => bulkLabel("merge", 0));
  $("#remove-concept").addEventListener("click", () => bulkLabel("remove"));
  $("#delete-selected").addEventListener("click", deleteSelected);
  window.addEventListener("popstate", () => { readUrl(); syncFilterControls(); loadGrid(); });
  initUpload(app, { onDone: () => Promise.all([loadConcepts(), loadGrid()]) });
}

if (await shell()) {
  readUrl();
  wire();
  syncFilterControls();
  writeUrl(false);
  await Promise.all([loadConcepts(), loadGrid()]);
  document.body.dataset.ready = "1";
}
