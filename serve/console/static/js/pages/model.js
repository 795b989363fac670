// A model's page: its definition, its versions (status, progress, test metric, a link to the evaluation),
// training a new version (with optional overrides from the hyperparameter form), and the live panel of the
// training (else the newest) version: progress text and three charts (loss, learning rate, validation
// metric) from the version's progress record — `curve` ([step, loss, lr] points) and `history` (one record
// per finished epoch) — polled every second while queued/training. Cancel and resume. The tuning section
// lives in ../tuning.js.
import { appPath, get, post } from "../api.js";
import { $, clearErrors, el, errorText, fmt, guard, page, poll, shell, showError, toast, when } from "../ui.js";
import { lineChart, shortNumber } from "../charts.js";
import { findTemplate, paramsForm, parseExtra, showDefault } from "../params_form.js";
import { METRICS, record, statusOf, statusPill, testMetric } from "../versions.js";
import { startTuning } from "../tuning.js";

const ACTIVE = ["queued", "training"];
const state = { model: null, task: "", versions: [], live: null, stopPoll: null, signature: "", form: null, pinned: false };
const modelPath = (rest = "") => appPath(page.app, `/models/${encodeURIComponent(page.model)}${rest}`);
const versionHref = (id) => `/apps/${encodeURIComponent(page.app)}/models/${encodeURIComponent(page.model)}/versions/${encodeURIComponent(id)}`;

// --- the model and its versions -----------------------------------------------------------------------

function showModel(model) {
  const meta = record(model);
  state.task = meta.task || "";
  const params = Object.entries(meta.params || {});
  $("#model-summary").textContent = `${state.task} · ${meta.template || ""}`;
  $("#model-info").replaceChildren(el("dl", { class: "facts" },
    el("dt", {}, "Task"), el("dd", {}, state.task),
    el("dt", {}, "Template"), el("dd", {}, meta.template || "–"),
    el("dt", {}, "Default version"), el("dd", { class: "mono" }, meta.default_version || "newest trained"),
    el("dt", {}, "Concepts"), el("dd", {}, (meta.concepts || []).join(", ") || "all of the app's"),
    el("dt", {}, "Parameters"), el("dd", {}, params.length
      ? params.map(([k, v]) => el("span", { class: "param-chip" }, el("code", {}, k), `=${showDefault(v)}`))
      : el("span", { class: "muted" }, "the template's defaults")),
    el("dt", {}, "Created"), el("dd", {}, when(model.created_at))));
}

function percentOf(v) {
  const s = v.status || {};
  if (typeof s.percent_completed === "number") return s.percent_completed;
  return statusOf(v) === "trained" ? 100 : null;
}

function versionRow(v) {
  const word = statusOf(v);
  const metric = testMetric(v, state.task);
  const pct = percentOf(v);
  const trained = word === "trained";
  const row = el("tr", { dataset: { version: v.id }, class: `clickable${state.live && state.live.id === v.id ? " current" : ""}`,
    onclick: (e) => { if (!e.target.closest("a,button")) { state.pinned = true; watch(v); } } },
  el("td", { class: "mono" }, trained ? el("a", { href: versionHref(v.id) }, v.id) : v.id),
  el("td", { class: "muted" }, when(v.created_at)),
  el("td", {}, statusPill(word), record(v).tune_run ? el("span", { class: "muted small" }, " tuning trial") : null),
  el("td", { class: "num" }, pct === null ? "–" : `${pct}%`),
  el("td", { class: "num" }, metric ? `${metric[0]} ${fmt(metric[1])}` : "–"),
  el("td", {}, trained ? el("a", { href: versionHref(v.id), class: "button small" }, "Evaluation") : null));
  return row;
}

function showVersions() {
  const body = $("#versions tbody");
  if (!state.versions.length) {
    body.replaceChildren(el("tr", {}, el("td", { colspan: 6, class: "empty" }, "No versions yet: train one.")));
    return;
  }
  body.replaceChildren(...state.versions.slice().reverse().map(versionRow));
}

async function loadVersions() {
  const data = await guard(() => get(modelPath("/versions"), { per_page: 1000 }));
  if (!data) return false;
  state.versions = data.model_versions || [];
  showVersions();
  return true;
}

function replaceVersion(v) {
  const i = state.versions.findIndex((x) => x.id === v.id);
  if (i >= 0) state.versions[i] = v; else state.versions.push(v);
  showVersions();
}

// --- the live panel ----------------------------------------------------------------------------------

function duration(seconds) {
  if (typeof seconds !== "number" || !Number.isFinite(seconds)) return "–";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}

function finishedText(word, p) {
  const history = Array.isArray(p.history) ? p.history : [];
  const last = history[history.length - 1];
  const key = metricKey(history);
  const evaluated = history.filter((h) => key && typeof (h.metrics || {})[key] === "number");
  const seconds = history.reduce((sum, h) => sum + (h.seconds || 0), 0);
  return [word, `${history.length}/${p.num_epochs ?? history.length} epochs`, `train loss ${fmt(last.train_loss, 4)}`,
    evaluated.length ? `validation ${key} ${fmt(evaluated[evaluated.length - 1].metrics[key])}` : null,
    seconds ? `${duration(seconds)} training` : null].filter(Boolean).join(" · ");
}

function progressText(word, p) {
  if (word === "queued") return "queued: waiting for the cluster";
  if (!ACTIVE.includes(word) && Array.isArray(p.history) && p.history.length) return finishedText(word, p);
  if (p.epoch) {
    const parts = [`epoch ${p.epoch}/${p.num_epochs ?? "?"}`, `step ${p.step ?? "?"}/${p.steps_per_epoch ?? "?"}`,
      `loss ${fmt(p.loss, 4)}`, `lr ${shortNumber(p.lr)}`];
    parts.push(word === "training" ? `eta ${duration(p.eta_s)}` : word);
    return parts.join(" · ");
  }
  if (p.phase) return `${word}: ${p.phase}`;
  return word === "training" ? "training: starting" : word;
}

function metricKey(history) {
  const keys = new Set(history.flatMap((h) => Object.keys(h.metrics || {})));
  return (METRICS[state.task] || []).find((k) => keys.has(k))
    || [...keys].find((k) => k !== "epoch" && history.some((h) => typeof (h.metrics || {})[k] === "number"));
}

/** The three charts' series from a progress record (curve: A5 live points; history: finished epochs). */
export function chartData(p) {
  const history = Array.isArray(p.history) ? p.history : [];
  const curve = Array.isArray(p.curve) ? p.curve : [];
  const spe = p.steps_per_epoch;
  const byStep = Boolean(spe) || curve.length > 0;
  const epochX = (h, end) => (spe ? (end ? h.epoch * spe : (h.epoch - 1) * spe + 1) : h.epoch);
  const loss = [];
  if (curve.length) loss.push({ name: "train loss", points: curve.map((c) => [c[0], c[1]]) });
  loss.push({ name: "epoch mean", points: history.map((h) => [epochX(h, true), h.train_loss]), dots: true });
  const lr = curve.length ? [{ name: "learning rate", points: curve.map((c) => [c[0], c[2]]) }]
    : [{ name: "learning rate", points: history.map((h) => [epochX(h, false), h.lr]) }];
  const key = metricKey(history);
  const metric = key ? [{ name: `validation ${key}`, points: history.filter((h) => typeof (h.metrics || {})[key] === "number")
    .map((h) => [h.epoch, h.metrics[key]]), dots: true }] : [];
  return { loss, lr, metric, key, xLabel: byStep ? "step" : "epoch" };
}

function drawCharts(p) {
  const data = chartData(p);
  const intX = (x) => (Number.isInteger(x) ? String(x) : "");
  lineChart($("#chart-loss"), { title: "Training loss", series: data.loss, xLabel: data.xLabel, yLabel: "loss", xFormat: intX,
    empty: "the loss appears with the first steps" });
  lineChart($("#chart-lr"), { title: "Learning rate", series: data.lr, xLabel: data.xLabel, yLabel: "lr", xFormat: intX,
    empty: "the learning rate appears with the first steps" });
  lineChart($("#chart-metric"), { title: data.key ? `Validation ${data.key}` : "Validation metric", series: data.metric,
    xLabel: "epoch", yLabel: data.key || "metric", xFormat: intX, yFormat: (v) => String(+v.toFixed(3)),
    empty: "the metric appears after the first evaluation" });
}

function showLive(v) {
  const word = statusOf(v);
  const p = record(v).progress || {};
  $("#live").hidden = false;
  $("#live-version").textContent = v.id;
  const pill = $("#live-status");
  pill.className = `pill ${word}`;
  pill.textContent = word;
  const pct = percentOf(v);
  const bar = $("#live-progress");
  if (pct === null && word === "training") bar.removeAttribute("value"); else bar.value = pct ?? 0;
  $("#progress-text").textContent = progressText(word, p);
  const error = record(v).error || (["failed", "cancelled"].includes(word) ? (v.status || {}).details : "");
  $("#live-error").hidden = !error;
  $("#live-error").textContent = error ? String(error) : "";
  $("#cancel").hidden = !ACTIVE.includes(word);
  $("#resume").hidden = !["failed", "cancelled"].includes(word);
  const signature = JSON.stringify([v.id, p.history && p.history.length, p.curve && p.curve.length,
    p.curve && p.curve.length && p.curve[p.curve.length - 1], p.epoch, p.step, word]);
  if (signature !== state.signature) { state.signature = signature; drawCharts(p); }
}

/** Show `v` in the live panel; poll it every second while it is queued or training. */
function watch(v) {
  if (state.stopPoll) state.stopPoll();
  state.live = v;
  state.signature = "";
  showVersions();
  showLive(v);
  if (!ACTIVE.includes(statusOf(v))) { state.stopPoll = null; return; }
  state.stopPoll = poll(async () => {
    if (!state.live || state.live.id !== v.id) return true;
    const data = await get(modelPath(`/versions/${encodeURIComponent(v.id)}`));
    const now = data.model_version;
    state.live = now;
    replaceVersion(now);
    showLive(now);
    if (ACTIVE.includes(statusOf(now))) return false;
    toast(`version ${now.id} ${statusOf(now)}`, statusOf(now) === "trained" ? "ok" : "error");
    return true;
  }, 1000);
}

function pickLive() {
  const active = state.versions.filter((v) => ACTIVE.includes(statusOf(v)));
  const v = active.length ? active[active.length - 1] : state.versions[state.versions.length - 1];
  if (v) watch(v);
}

// --- actions -----------------------------------------------------------------------------------------

async function train() {
  const form = $("#train-form");
  clearErrors(form);
  const values = state.form ? state.form.values() : {};
  const extra = parseExtra($("#train-extra").value);
  const problems = [...(state.form ? state.form.clientErrors() : []), ...extra.errors];
  if (problems.length) { $("#train-params").open = true; showError(new Error(problems.join("; ")), form); return; }
  const button = $("#train");
  button.disabled = true;
  try {
    const data = await post(modelPath("/versions"), { model_versions: [{ train_info: { params: { ...values, ...extra.params } } }] });
    const v = data.model.model_version;
    toast(`version ${v.id} queued`);
    replaceVersion(v);
    state.pinned = false;
    watch(v);
  } catch (err) {
    $("#train-params").open = true;
    showError(err, form);
  } finally {
    button.disabled = false;
  }
}

async function versionAction(action) {
  const v = state.live;
  if (!v) return;
  if (action === "cancel" && !confirm(`Cancel the training of version ${v.id}?`)) return;
  const button = $(`#${action}`);
  button.disabled = true;
  await guard(async () => {
    const data = await post(modelPath(`/versions/${encodeURIComponent(v.id)}/${action}`), {});
    const now = data.model_version || (data.model && data.model.model_version) || v;
    toast(action === "cancel" ? `cancelling version ${v.id}` : `version ${v.id} resumed`);
    replaceVersion(now);
    watch(now);
  });
  button.disabled = false;
}

async function setupForms() {
  const meta = record(state.model);
  let template;
  try {
    template = await findTemplate(meta.task, meta.template);
  } catch (err) {
    template = undefined;
    $("#train-params-fields").replaceChildren(el("p", { class: "form-error" }, `Templates: ${errorText(err)}`));
  }
  if (template && template.params) {
    state.form = paramsForm($("#train-params-fields"), template.params);
  } else if (!$("#train-params-fields").childElementCount) {
    $("#train-params-fields").replaceChildren(el("p", { class: "muted" }, "Give overrides as name=value lines below."));
  }
  startTuning({ modelPath, rows: template ? template.params : null, onPromoted: reloadModel, onTrials: loadVersions });
}

async function reloadModel() {
  const data = await guard(() => get(modelPath()));
  if (data) { state.model = data.model; showModel(data.model); }
  await loadVersions();
}

if (await shell()) {
  const data = await guard(() => get(modelPath()));
  if (!data) {
    $("#model-info").replaceChildren(el("p", { class: "empty" }, "This model could not be loaded. ",
      el("a", { href: `/apps/${encodeURIComponent(page.app)}/models` }, "Back to the models")));
    $("#train").disabled = true;
    for (const id of ["#train-params", "#tuning", "#versions"]) $(id).hidden = true;
  } else {
    state.model = data.model;
    showModel(data.model);
    $("#train").addEventListener("click", train);
    $("#cancel").addEventListener("click", () => versionAction("cancel"));
    $("#resume").addEventListener("click", () => versionAction("resume"));
    if (await loadVersions()) pickLive();
    await setupForms();
  }
}
