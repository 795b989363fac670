// Predict and search: pick one of the app's models with a trained version (the model's default/newest, or a
// given version), drop an image. A classifier answers concepts with scores (ol#predictions, best first), a
// detector boxes drawn over the image (rect.box.predicted) and listed, an embedding model searches the app's
// inputs with the image (POST /searches, deeptrain's body) and shows the nearest (#search-results). Without a
// search index (or with another model's), button#build-index POSTs /searches/index and follows its job.
import { appPath, fileBase64, get, imageUrl, post } from "../api.js";
import { $, el, errorText, fmt, page, poll, shell, svg, toast, when } from "../ui.js";

const MAX_BYTES = 20 * 1024 * 1024;
const state = { models: new Map(), file: null, preview: "", urls: [], index: null, stopBuild: null, seq: 0 };

function showError(text) {
  const box = $("#predict-error");
  box.textContent = text || "";
  box.hidden = !text;
}

function selected() {
  const value = $("#predict-model").value;
  if (!value) return null;
  const [modelId, versionId] = value.split("/");
  return { modelId, versionId: versionId || null, model: state.models.get(modelId) };
}

const taskOf = (model) => ((model && model.metadata && model.metadata.deeptrain) || {}).task || "";

// --- models ---------------------------------------------------------------------------------------------

async function loadModels() {
  const select = $("#predict-model");
  let models;
  try {
    models = (await get(appPath(page.app, "/models"), { per_page: 1000 })).models || [];
  } catch (err) {
    select.replaceChildren(el("option", { value: "" }, "models unavailable"));
    showError(errorText(err));
    return;
  }
  const groups = await Promise.all(models.map(async (m) => {
    try {
      const data = await get(appPath(page.app, `/models/${encodeURIComponent(m.id)}/versions`),
        { trained_only: true, per_page: 1000 });
      return [m, (data.model_versions || []).slice().reverse()];
    } catch {
      return [m, []];
    }
  }));
  const usable = groups.filter(([, versions]) => versions.length);
  for (const [m] of usable) state.models.set(m.id, m);
  if (!usable.length) {
    select.replaceChildren(el("option", { value: "" }, "no trained model yet"));
    showError("This app has no trained model yet: train one on the Models page.");
    return;
  }
  select.replaceChildren(...usable.map(([m, versions]) => el("optgroup", { label: `${m.id} · ${taskOf(m)}` },
    el("option", { value: m.id }, `${m.id} (default version)`),
    ...versions.map((v) => el("option", { value: `${m.id}/${v.id}` }, `${m.id} / ${v.id} · ${when(v.created_at)}`)))));
  const wanted = new URLSearchParams(location.search).get("model");
  if (wanted && [...select.options].some((o) => o.value === wanted)) select.value = wanted;
  await modelChanged();
}

async function modelChanged() {
  const sel = selected();
  const task = taskOf(sel && sel.model);
  const pill = $("#model-task");
  pill.hidden = !task;
  pill.textContent = task;
  $("#top-k-field").hidden = task !== "embedding";
  $("#index-status").hidden = task !== "embedding";
  if (task === "embedding") await loadIndex();
  if (state.file) await run();
}

// --- the search index -----------------------------------------------------------------------------------

async function loadIndex() {
  const sel = selected();
  const text = $("#index-text");
  const button = $("#build-index");
  try {
    const info = (await get(appPath(page.app, "/searches/index"))).search_index;
    state.index = info;
    const rec = (info.metadata && info.metadata.deeptrain) || {};
    const same = info.model.id === sel.modelId && (!sel.versionId || info.model.model_version.id === sel.versionId);
    text.textContent = `Search index: model ${info.model.id} / ${info.model.model_version.id}, ` +
      `${info.total} inputs${rec.updated_at ? `, built ${when(rec.updated_at)}` : ""}.` +
      (same ? "" : " Searches use it whichever embedding model is picked.");
    button.textContent = same ? "Update the search index" : `Build the index with ${sel.modelId}`;
    button.hidden = false;
  } catch (err) {
    state.index = null;
    text.textContent = err.httpStatus === 404 ? "This app has no search index yet: build one to search."
      : `The search index is unavailable: ${errorText(err)}`;
    button.textContent = "Build the search index";
    button.hidden = false;
  }
}

async function buildIndex() {
  const sel = selected();
  if (!sel) return;
  const button = $("#build-index");
  button.disabled = true;
  let job;
  try {
    job = (await post(appPath(page.app, "/searches/index"), { model_id: sel.modelId, version_id: sel.versionId || undefined })).job;
  } catch (err) {
    button.disabled = false;
    $("#index-text").textContent = `Building the index failed: ${errorText(err)}`;
    return;
  }
  $("#index-text").textContent = `Building the search index (job ${job.id})…`;
  if (state.stopBuild) state.stopBuild();
  state.stopBuild = poll(async () => {
    let status = "";
    try {
      const j = (await get(appPath(page.app, `/jobs/${encodeURIComponent(job.id)}`))).job || {};
      status = String(j.status || "").toUpperCase();
      if (status === "FAILED" || status === "STOPPED") {
        $("#index-text").textContent = `Building the index ${status.toLowerCase()}: ${j.message || ""}`;
        button.disabled = false;
        return true;
      }
    } catch { status = ""; }
    if (status && status !== "SUCCEEDED") { $("#index-text").textContent = `Building the search index (job ${job.id}: ${status.toLowerCase()})…`; return false; }
    await loadIndex();
    const done = state.index && (status === "SUCCEEDED" || state.index.model.id === sel.modelId);
    if (done) { button.disabled = false; toast("search index ready"); if (state.file) run(); }
    return done;
  }, 2000);
}

// --- predicting -----------------------------------------------------------------------------------------

function setFile(file) {
  if (!file) return;
  showError("");
  if (file.size > MAX_BYTES) { showError(`${file.name}: larger than 20 MB`); return; }
  state.file = file;
  if (state.preview) URL.revokeObjectURL(state.preview);
  state.preview = URL.createObjectURL(file);
  $("#predict-image").src = state.preview;
  $("#predict-file-name").textContent = `${file.name} · ${(file.size / 1024).toFixed(1)} KB`;
  $("#predict-result").hidden = false;
  run();
}

function resetResult(title, status) {
  $("#result-title").textContent = title;
  $("#predict-status").textContent = status;
  for (const id of ["#predictions", "#regions", "#search-results"]) { $(id).replaceChildren(); $(id).hidden = true; }
  $("#predict-boxes").replaceChildren();
}

async function run() {
  const sel = selected();
  if (!sel || !state.file) { if (!sel) showError("Pick a model first."); return; }
  const seq = ++state.seq;
  const task = taskOf(sel.model);
  resetResult(task === "embedding" ? "Nearest inputs" : "Prediction", "Working…");
  let base64;
  try { base64 = await fileBase64(state.file); } catch (err) { showError(`could not read the file: ${err}`); return; }
  const started = performance.now();
  try {
    if (task === "embedding") await search(base64, seq);
    else await predict(sel, task, base64, seq);
    if (seq === state.seq) $("#predict-status").textContent += ` (${Math.round(performance.now() - started)} ms)`;
  } catch (err) {
    if (seq !== state.seq) return;
    $("#predict-status").textContent = "";
    if (task === "embedding" && err.httpStatus === 404 && /search index/.test(err.message)) {
      $("#index-status").hidden = false;
      $("#build-index").hidden = false;
    }
    showError(errorText(err));
  }
}

async function predict(sel, task, base64, seq) {
  const path = sel.versionId
    ? `/models/${encodeURIComponent(sel.modelId)}/versions/${encodeURIComponent(sel.versionId)}/outputs`
    : `/models/${encodeURIComponent(sel.modelId)}/outputs`;
  const body = { inputs: [{ data: { image: { base64 } } }] };
  if (task === "classification") body.model = { output_info: { output_config: { max_concepts: 10 } } };
  const data = await post(appPath(page.app, path), body);
  if (seq !== state.seq) return;
  const out = (data.outputs || [])[0] || { data: {} };
  const version = out.model && out.model.model_version ? out.model.model_version.id : "";
  if (task === "detection") showRegions(out.data.regions || [], version);
  else showConcepts(out.data.concepts || [], version);
}

function showConcepts(concepts, version) {
  const sorted = concepts.slice().sort((a, b) => b.value - a.value);
  $("#predict-status").textContent = `${sorted.length} concepts from version ${version}`;
  const list = $("#predictions");
  list.replaceChildren(...sorted.map((c) => {
    const bar = el("span", { class: "score-bar" }, el("span", { class: "score-fill" }));
    bar.firstChild.style.width = `${Math.max(0, Math.min(1, c.value)) * 100}%`;
    return el("li", { class: "prediction", dataset: { concept: c.id } },
      el("span", { class: "concept" }, c.name || c.id), bar, el("span", { class: "score num" }, fmt(c.value, 3)));
  }));
  list.hidden = false;
}

function showRegions(regions, version) {
  const img = $("#predict-image");
  const draw = () => {
    const w = img.naturalWidth || 1;
    const h = img.naturalHeight || 1;
    const layer = $("#predict-boxes");
    layer.setAttribute("viewBox", `0 0 ${w} ${h}`);
    layer.setAttribute("preserveAspectRatio", "none");
    const font = Math.max(10, Math.round(Math.max(w, h) / 40));
    layer.replaceChildren(...regions.flatMap((r, i) => {
      const b = r.region_info.bounding_box;
      const c = (r.data.concepts || [])[0] || {};
      const x = b.left_col * w;
      const y = b.top_row * h;
      return [svg("rect", { x, y, width: (b.right_col - b.left_col) * w, height: (b.bottom_row - b.top_row) * h,
        class: "box predicted", "data-region": i, "data-concept": c.id || "" }),
      svg("text", { x: x + 2, y: Math.max(font, y - 3), class: "box-label", "font-size": font }, `${c.name || c.id} ${fmt(c.value, 2)}`)];
    }));
  };
  if (img.complete && img.naturalWidth) draw(); else img.addEventListener("load", draw, { once: true });
  $("#predict-status").textContent = `${regions.length} boxes from version ${version}`;
  const list = $("#regions");
  list.replaceChildren(...regions.map((r, i) => {
    const b = r.region_info.bounding_box;
    const c = (r.data.concepts || [])[0] || {};
    return el("li", { class: "region", dataset: { region: i, concept: c.id || "" } },
      el("span", { class: "concept" }, c.name || c.id), el("span", { class: "score num" }, fmt(c.value, 3)),
      el("span", { class: "muted mono small" }, [b.left_col, b.top_row, b.right_col, b.bottom_row].map((v) => fmt(v, 2)).join(" ")));
  }));
  list.hidden = !regions.length;
}

async function search(base64, seq) {
  const topK = Math.max(1, Math.min(100, Number($("#search-top-k").value) || 12));
  const data = await post(appPath(page.app, "/searches"), { query: { image: { base64 } }, top_k: topK });
  if (seq !== state.seq) return;
  for (const url of state.urls.splice(0)) URL.revokeObjectURL(url);
  const hits = data.hits || [];
  const m = data.model || {};
  $("#predict-status").textContent = `${hits.length} nearest inputs (index of ${m.id || "?"} / ${(m.model_version || {}).id || "?"})`;
  const grid = $("#search-results");
  grid.replaceChildren(...hits.map((h) => {
    const id = h.input.id;
    const img = el("img", { alt: `input ${id}` });
    imageUrl(appPath(page.app, `/inputs/${encodeURIComponent(id)}/image`), { size: 128 })
      .then((url) => { state.urls.push(url); img.src = url; }).catch(() => { img.alt = "image unavailable"; });
    return el("div", { class: "thumb result", dataset: { input: id } },
      el("a", { href: `/apps/${encodeURIComponent(page.app)}/inputs/${encodeURIComponent(id)}`, title: `input ${id}` }, img),
      el("div", { class: "caption" }, el("b", {}, fmt(h.score, 3)), " ", (h.concepts || []).map((c) => c.id).join(", ")));
  }));
  grid.hidden = false;
}

// --- start ----------------------------------------------------------------------------------------------

function wireDrop() {
  const zone = $("#predict-drop");
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    const file = [...(e.dataTransfer.files || [])][0];
    if (file) setFile(file);
  });
  zone.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("#predict-file").click(); } });
  $("#predict-file").addEventListener("change", (e) => setFile(e.target.files[0]));
}

if (await shell()) {
  wireDrop();
  $("#predict-model").addEventListener("change", () => { showError(""); modelChanged(); });
  $("#build-index").addEventListener("click", buildIndex);
  $("#search-top-k").addEventListener("change", () => { if (state.file) run(); });
  await loadModels();
}
