// Create a model in three steps: the task, a template of that task (GET /v2/templates: description,
// parameter count, minimum image size), then the model id and the hyperparameter form generated from the
// template's schema. Submitting creates the model (POST /models) and, with "train now", trains its first
// version (POST /models/{id}/versions) before going to the model's page. Every server error lands next to
// the field it names.
import { appPath, post } from "../api.js";
import { $, $$, clearErrors, el, errorText, page, shell, showError, toast } from "../ui.js";
import { loadTemplates, paramsForm, parseExtra } from "../params_form.js";

const TYPE_OF_TASK = { classification: "visual-classifier", detection: "visual-detector", embedding: "visual-embedder" };
// the server's default template per task (what POST /models picks without one): selected first, and the
// only choice when the template list cannot be loaded (a model can still be created then)
const FALLBACK = { classification: ["ResNext"], detection: ["InceptionV2"], embedding: ["ResNext"] };

const state = { task: "classification", template: null, form: null, templates: null, created: null };

export function paramCount(n) {
  if (typeof n !== "number" || !Number.isFinite(n)) return "";
  if (n >= 1e9) return `${(n / 1e9).toFixed(1)}B parameters`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)}M parameters`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}k parameters`;
  return `${n} parameters`;
}

function card(t) {
  const node = el("div", { class: "template-card", role: "button", tabindex: 0, "aria-pressed": "false",
    dataset: { template: t.name } },
  el("div", { class: "template-name" }, t.name),
  el("div", { class: "template-meta" },
    t.reference_num_params ? el("span", { class: "pill" }, paramCount(t.reference_num_params)) : null,
    t.min_image_size ? el("span", { class: "pill" }, `min image ${t.min_image_size} px`) : null),
  el("p", { class: "template-desc" }, t.description || ""),
  t.reference ? el("p", { class: "template-ref muted" }, t.reference) : null);
  const pick = () => selectTemplate(t);
  node.addEventListener("click", pick);
  node.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); pick(); } });
  return node;
}

function selectTemplate(t) {
  state.template = t;
  for (const node of $$(".template-card")) node.setAttribute("aria-pressed", String(node.dataset.template === t.name));
  const params = $("#params");
  if (t.params && t.params.length) state.form = paramsForm(params, t.params);
  else {
    state.form = null;
    params.replaceChildren(el("p", { class: "muted" }, "The parameter list is not available: give parameters as name=value lines below."));
  }
  clearErrors($("#model-form"));
}

function showTemplates() {
  const box = $("#templates");
  const list = (state.templates || []).filter((t) => t.task === state.task);
  if (!list.length) { box.replaceChildren(el("p", { class: "muted" }, "No template for this task.")); return; }
  box.replaceChildren(...list.map(card));
  const keep = state.template && list.find((t) => t.name === state.template.name && t.task === state.task);
  selectTemplate(keep || list.find((t) => t.name === FALLBACK[state.task][0]) || list[0]);
}

async function loadAll() {
  try {
    state.templates = await loadTemplates();
  } catch (err) {
    state.templates = Object.entries(FALLBACK).flatMap(([task, names]) => names.map((name) => ({ task, name,
      description: "The template list could not be loaded; the form below takes parameters as name=value lines." })));
    $("#templates").before(el("p", { class: "form-error", id: "templates-error" }, `Templates: ${errorText(err)}`));
  }
  showTemplates();
}

function collect(form) {
  const values = state.form ? state.form.values() : {};
  const extra = parseExtra($("#extra-params", form).value);
  const problems = [...(state.form ? state.form.clientErrors() : []), ...extra.errors];
  return { params: { ...values, ...extra.params }, problems };
}

async function submit(event) {
  event.preventDefault();
  const form = event.currentTarget;
  clearErrors(form);
  const id = $("#model-id", form).value.trim();
  const { params, problems } = collect(form);
  if (!id) problems.unshift("id: give the model an id");
  if (!state.template) problems.push("pick a template (step 2)");
  if (problems.length) { showError(new Error(problems.join("; ")), form); return; }
  const button = $("#create-model");
  button.disabled = true;
  try {
    if (state.created !== id) {
      await post(appPath(page.app, "/models"), { model: { id, model_type_id: TYPE_OF_TASK[state.task],
        metadata: { template: state.template.name, params } } });
      state.created = id;
      toast(`model ${id} created`);
    }
    const to = `/apps/${encodeURIComponent(page.app)}/models/${encodeURIComponent(id)}`;
    if ($("#train-now").checked) {
      try {
        await post(appPath(page.app, `/models/${encodeURIComponent(id)}/versions`), { model_versions: [{ train_info: { params } }] });
      } catch (err) {
        showError(err, form);
        const top = $(".form-error", form);
        top.hidden = false;
        top.append(el("div", {}, `The model ${id} exists; its training did not start. `, el("a", { href: to }, "Open the model")));
        return;
      }
    }
    location.assign(to);
  } catch (err) {
    showError(err, form);
  } finally {
    button.disabled = false;
  }
}

if (await shell()) {
  const wanted = new URLSearchParams(location.search).get("task");
  if (wanted && TYPE_OF_TASK[wanted]) { state.task = wanted; $(`input[name=task][value=${wanted}]`).checked = true; }
  for (const radio of $$("input[name=task]")) {
    radio.addEventListener("change", () => { if (radio.checked) { state.task = radio.value; showTemplates(); } });
  }
  $("#model-form").addEventListener("submit", submit);
  await loadAll();
}
