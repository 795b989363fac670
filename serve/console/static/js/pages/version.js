// A model version's evaluation page: its status and parameters; when trained, the stored test metrics
// (table#metrics), and from the evaluation route (…/evaluation, computed on demand from the weights) the
// per-concept figures, the confusion matrix and the PR curves — or, until that route answers, what the stored
// metrics give (per_concept and confusion_matrix of a classifier). Then the mistakes (…/mistakes, paged): the
// test images the model got wrong, each a link to the labeller. A version that is not trained shows its
// status and a link back.
import { appPath, get, imageUrl } from "../api.js";
import { $, el, errorText, fmt, fmtInt, page, pager, shell, when } from "../ui.js";
import { barCell, boxOverlay, confusionTable, prCurves } from "../eval_plots.js";

const PER_PAGE = 24;
const HEADLINE = ["top1", "top5", "macro_f1", "macro_precision", "macro_recall", "macro_auc", "map", "ap50", "ap75",
  "recall@1", "recall@5", "recall@10", "map@r"];
const versionPath = (rest = "") => appPath(page.app,
  `/models/${encodeURIComponent(page.model)}/versions/${encodeURIComponent(page.version)}${rest}`);
const state = { task: "", record: null, mistakesPage: 1, urls: [] };

// --- the version ------------------------------------------------------------------------------------------

function paramChips(params) {
  const entries = Object.entries(params || {}).filter(([, v]) => v !== null && v !== undefined);
  if (!entries.length) return el("span", { class: "muted" }, "the template's defaults");
  return el("div", { class: "chips" }, entries.map(([k, v]) =>
    el("span", { class: "param-chip" }, el("code", {}, k), `=${typeof v === "object" ? JSON.stringify(v) : v}`)));
}

function showVersion(version, model) {
  const rec = (version.metadata && version.metadata.deeptrain) || {};
  const mrec = (model && model.metadata && model.metadata.deeptrain) || {};
  state.record = rec;
  state.task = mrec.task || "";
  const word = rec.status || "";
  const pill = $("#version-status");
  pill.className = `pill ${word}`;
  pill.textContent = word || "unknown";
  const concepts = rec.concepts || [];
  $("#version-info").replaceChildren(el("dl", { class: "facts" },
    el("dt", {}, "Task"), el("dd", {}, `${state.task || "–"}${mrec.template ? ` · ${mrec.template}` : ""}`),
    el("dt", {}, "Status"), el("dd", {}, word, version.status && version.status.details
      ? el("span", { class: "muted" }, ` — ${version.status.details}`) : null),
    el("dt", {}, "Created"), el("dd", {}, when(rec.created_at || version.created_at)),
    el("dt", {}, "Finished"), el("dd", {}, when(rec.finished_at)),
    el("dt", {}, "Dataset version"), el("dd", { class: "mono" }, rec.dataset_version_id || "–"),
    el("dt", {}, "Concepts"), el("dd", {}, concepts.length ? `${concepts.length}: ${concepts.join(", ")}` : "–"),
    el("dt", {}, "Parameters"), el("dd", {}, paramChips(rec.params))));
  return word;
}

function showNotTrained(word, version) {
  const rec = state.record || {};
  const what = { queued: "is queued for training", training: "is training", failed: "failed",
    cancelled: "was cancelled" }[word] || `is ${word || "not trained"}`;
  const text = [`This version ${what}: it has no evaluation until it is trained.`];
  if (rec.error) text.push(` Error: ${String(rec.error).slice(0, 400)}`);
  else if (version && version.status && version.status.details) text.push(` (${version.status.details})`);
  $("#not-trained-text").textContent = text.join("");
  $("#not-trained").hidden = false;
}

// --- the evaluation ---------------------------------------------------------------------------------------

/** The stored metrics in the evaluation route's shape (what a trained version always has). */
function fromStored(rec) {
  const m = rec.metrics || {};
  const concepts = rec.concepts || [];
  const matrix = Array.isArray(m.confusion_matrix) ? m.confusion_matrix : null;
  const per = m.per_concept && typeof m.per_concept === "object" ? m.per_concept : {};
  const order = concepts.length ? concepts.filter((c) => c in per).concat(Object.keys(per).filter((c) => !concepts.includes(c)))
    : Object.keys(per);
  return {
    task: state.task, concepts, split: m.split, metrics: m,
    per_concept: order.map((c) => {
      const i = concepts.indexOf(c);
      const support = matrix && i >= 0 && matrix[i] ? matrix[i].reduce((a, b) => a + b, 0) : undefined;
      return { concept: c, ...per[c], support };
    }),
    confusion_matrix: matrix && concepts.length === matrix.length ? { concepts, counts: matrix } : null,
    pr_curves: null,
  };
}

function scalarRows(metrics) {
  const rows = Object.entries(metrics || {}).filter(([, v]) => typeof v === "number" && Number.isFinite(v));
  const rank = (k) => { const i = HEADLINE.indexOf(k); return i < 0 ? 100 : i; };
  rows.sort((a, b) => rank(a[0]) - rank(b[0]) || a[0].localeCompare(b[0]));
  return rows;
}

function showMetrics(metrics, note) {
  const rows = scalarRows(metrics).map(([k, v]) => el("tr", { dataset: { metric: k } },
    el("td", { class: HEADLINE.includes(k) ? "metric-name headline" : "metric-name" }, k),
    el("td", { class: "num" }, Number.isInteger(v) ? fmtInt(v) : fmt(v, 4))));
  $("#metrics tbody").replaceChildren(...(rows.length ? rows
    : [el("tr", {}, el("td", { colspan: 2, class: "empty" }, "No stored metrics."))]));
  $("#eval-note").textContent = note || "";
}

function showPerConcept(rows) {
  $("#per-concept-card").hidden = !rows.length;
  $("#per-concept tbody").replaceChildren(...rows.map((r) => el("tr", { dataset: { concept: r.concept } },
    el("td", {}, r.concept), barCell(r.precision), barCell(r.recall), barCell(r.f1), barCell(r.ap),
    el("td", { class: "num" }, typeof r.support === "number" ? fmtInt(r.support) : "–"))));
}

function showEvaluation(ev, note) {
  showMetrics(ev.metrics, note);
  showPerConcept(ev.per_concept || []);
  const cm = ev.confusion_matrix;
  $("#confusion-card").hidden = !(cm && cm.concepts && cm.concepts.length);
  if (cm && cm.concepts && cm.concepts.length) confusionTable($("#confusion"), cm);
  const curves = ev.pr_curves;
  $("#pr-card").hidden = !curves && ev.task !== "classification";
  const ap = Object.fromEntries((ev.per_concept || []).filter((r) => typeof r.ap === "number").map((r) => [r.concept, r.ap]));
  prCurves($("#pr-curves"), curves || {}, ap);
  if (!curves) {
    const svgEl = $("#pr-curves");
    const text = svgEl.querySelector(".chart-empty");
    if (text) text.textContent = note ? "PR curves come with the full evaluation" : "computing…";
  }
}

async function loadEvaluation() {
  const stored = fromStored(state.record);
  showEvaluation(stored, "Computing the full evaluation from the weights…");
  try {
    const data = await get(versionPath("/evaluation"));
    const ev = data.evaluation || {};
    const merged = { ...stored, ...ev, metrics: { ...(stored.metrics || {}), ...(ev.metrics || {}) } };
    if (!ev.per_concept || !ev.per_concept.length) merged.per_concept = stored.per_concept;
    if (!ev.confusion_matrix) merged.confusion_matrix = stored.confusion_matrix;
    const checked = typeof ev.checked === "number" ? `Evaluated on ${fmtInt(ev.checked)} ${ev.split || "test"} inputs.` : "";
    showEvaluation(merged, checked);
  } catch (err) {
    showEvaluation(stored, `The full evaluation is not available (${errorText(err)}): showing the stored metrics.`);
  }
}

// --- the mistakes -----------------------------------------------------------------------------------------

function caption(m) {
  const top = (m.predicted || [])[0];
  const truth = (m.true || []).join(", ") || "none";
  const parts = [`true: ${truth}`];
  const said = m.nearest_input_id ? "nearest" : "predicted";  // an embedding: the nearest test input's concept
  if (top) parts.push(`${said}: ${top.concept} ${fmt(top.score, 2)}`);
  else if (!m.boxes) parts.push("predicted: nothing");
  if (m.boxes) {
    const missed = (m.boxes.missed || []).length;
    const fps = (m.boxes.false_positives || []).length;
    parts.push([missed ? `${missed} missed` : "", fps ? `${fps} false` : ""].filter(Boolean).join(", ") || "");
  }
  return parts.filter(Boolean).join(" · ");
}

function mistakeCard(m) {
  const href = `/apps/${encodeURIComponent(page.app)}/inputs/${encodeURIComponent(m.input_id)}`;
  const img = el("img", { alt: `input ${m.input_id}` });
  const frame = el("div", { class: "mistake-frame" }, img, m.boxes ? boxOverlay(m.boxes) : null);
  const card = el("div", { class: "mistake", dataset: { input: m.input_id } },
    el("a", { href, title: `relabel input ${m.input_id}` }, frame,
      el("div", { class: "mistake-caption" }, caption(m))));
  imageUrl(appPath(page.app, `/inputs/${encodeURIComponent(m.input_id)}/image`), { size: 128 })
    .then((url) => {
      state.urls.push(url);
      img.addEventListener("load", () => {  // the frame takes the image's shape, so the boxes sit on it
        if (img.naturalWidth && img.naturalHeight) frame.style.aspectRatio = `${img.naturalWidth} / ${img.naturalHeight}`;
      }, { once: true });
      img.src = url;
    })
    .catch(() => { frame.classList.add("broken"); img.alt = "image unavailable"; });
  return card;
}

async function loadMistakes(p = state.mistakesPage) {
  state.mistakesPage = p;
  const grid = $("#mistakes");
  grid.replaceChildren(el("p", { class: "muted" }, "Looking for the mistakes…"));
  let data;
  try {
    data = await get(versionPath("/mistakes"), { page: p, per_page: PER_PAGE });
  } catch (err) {
    grid.replaceChildren(el("p", { class: "empty" }, `The mistakes are not available: ${errorText(err)}`));
    $("#mistakes-count").textContent = "";
    $("#mistakes-pager").replaceChildren();
    return;
  }
  for (const url of state.urls.splice(0)) URL.revokeObjectURL(url);
  const list = data.mistakes || [];
  const total = typeof data.num_mistakes === "number" ? data.num_mistakes : list.length;
  $("#mistakes-count").textContent = `${fmtInt(total)} mistakes among ${fmtInt(data.checked ?? 0)} test images`;
  grid.replaceChildren(...(list.length ? list.map(mistakeCard)
    : [el("p", { class: "empty" }, total ? "No mistakes on this page." : "No mistakes: every checked test image is right.")]));
  pager($("#mistakes-pager"), { page: p, perPage: PER_PAGE, total, onPage: (n) => {
    const url = new URL(location.href);
    url.searchParams.set("mistakes_page", n);
    history.replaceState(null, "", url);
    loadMistakes(n);
  } });
}

// --- start ------------------------------------------------------------------------------------------------

async function main() {
  if (!(await shell())) return;
  let version, model;
  try {
    [version, model] = await Promise.all([
      get(versionPath()).then((d) => d.model_version),
      get(appPath(page.app, `/models/${encodeURIComponent(page.model)}`)).then((d) => d.model).catch(() => null)]);
  } catch (err) {
    $("#version-info").replaceChildren(el("p", { class: "form-error" }, errorText(err)));
    $("#version-status").textContent = "unavailable";
    showNotTrained("", null);
    $("#not-trained-text").textContent = `This version could not be read: ${errorText(err)}`;
    return;
  }
  const word = showVersion(version, model);
  if (word !== "trained") { showNotTrained(word, version); return; }
  $("#try-predict").hidden = false;
  $("#evaluation").hidden = false;
  const p = Number(new URLSearchParams(location.search).get("mistakes_page")) || 1;
  await Promise.all([loadEvaluation(), loadMistakes(Math.max(1, Math.floor(p)))]);
}

main().catch((err) => { $("#version-info").replaceChildren(el("p", { class: "form-error" }, errorText(err))); });
