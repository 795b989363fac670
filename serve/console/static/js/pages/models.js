// The models page: the app's models with their type, template and newest version's status; a link to
// create one. Each model's newest version comes from its versions list (oldest first), fetched in parallel.
import { appPath, get } from "../api.js";
import { $, el, guard, page, shell, when } from "../ui.js";
import { record, statusOf, statusPill, testMetric } from "../versions.js";

const TASKS = { "visual-classifier": "classification", "visual-detector": "detection", "visual-embedder": "embedding" };

function row(model, newest) {
  const meta = record(model);
  const task = meta.task || TASKS[model.model_type_id] || model.model_type_id;
  const href = `/apps/${encodeURIComponent(page.app)}/models/${encodeURIComponent(model.id)}`;
  const metric = testMetric(newest, task);
  return el("tr", { dataset: { model: model.id } },
    el("td", {}, el("a", { href, class: "model-link" }, model.id)),
    el("td", {}, task),
    el("td", {}, meta.template || ""),
    el("td", { class: "mono muted" }, newest ? newest.id : "–"),
    el("td", {}, newest ? statusPill(statusOf(newest)) : el("span", { class: "muted" }, "not trained")),
    el("td", { class: "num" }, metric ? `${metric[0]} ${metric[1].toFixed(3)}` : ""),
    el("td", { class: "muted" }, when(model.created_at)));
}

async function newestVersion(model) {
  try {
    const data = await get(appPath(page.app, `/models/${encodeURIComponent(model.id)}/versions`), { per_page: 1000 });
    const versions = data.model_versions || [];
    return versions.length ? versions[versions.length - 1] : null;
  } catch {
    return model.model_version || null;  // the list's shown version is the next best thing
  }
}

async function listModels() {
  const body = $("#models-table tbody");
  const data = await guard(() => get(appPath(page.app, "/models"), { per_page: 1000 }));
  if (!data) { body.replaceChildren(el("tr", {}, el("td", { colspan: 7, class: "empty" }, "Could not load the models."))); return; }
  const models = data.models || [];
  if (!models.length) {
    body.replaceChildren(el("tr", {}, el("td", { colspan: 7, class: "empty" }, "No models yet: ",
      el("a", { href: `/apps/${encodeURIComponent(page.app)}/models/new` }, "create one"), ".")));
    return;
  }
  const newest = await Promise.all(models.map(newestVersion));
  body.replaceChildren(...models.map((m, i) => row(m, newest[i])));
}

if (await shell()) await listModels();
