// The model page's hyperparameter search (#tuning): a form over the template's schema where each filled
// field is a search space as `deeptrain tune` takes it, POST /models/{m}/tune_runs (answers with the Ray
// job at once: the run appears in GET …/tune_runs when the job starts), then a live table of the run's
// trials (params, status, epochs, validation metric; the best marked) polled every 2 s while it runs, and
// promoting the best trial to the model's default version.
import { get, post } from "./api.js";
import { $, clearErrors, el, fmt, guard, poll, showError, toast } from "./ui.js";
import { parseExtra, showDefault, spaceForm, spaceSpec } from "./params_form.js";
import { record } from "./versions.js";

const tune = { modelPath: null, form: null, run: null, stopPoll: null, onPromoted: null, onTrials: null, runs: [], seen: "" };
const JOB_ENDED = ["FAILED", "STOPPED"];

function spaceOf(form) {
  if (tune.form) return tune.form.space();
  const { params, errors } = parseExtra($("#tune-space-lines", form).value);
  if (errors.length) throw new Error(errors.join("; "));
  return Object.fromEntries(Object.entries(params).map(([k, v]) => [k, spaceSpec(String(v))]));
}

function trialRow(t, run) {
  const params = Object.entries(t.params || {}).map(([k, v]) => el("span", { class: "param-chip" }, el("code", {}, k), `=${showDefault(v)}`));
  const best = t.best || (run.best && run.best.trial_id === t.trial_id);
  const versionHref = `${location.pathname}/versions/${encodeURIComponent(t.version_id)}`;
  return el("tr", { dataset: { trial: t.trial_id, version: t.version_id }, class: best ? "best" : "" },
    el("td", { class: "mono" }, best ? el("span", { class: "best-mark", title: "best trial" }, "★ ") : null, t.trial_id),
    el("td", { class: "mono" }, t.status === "trained" ? el("a", { href: versionHref }, t.version_id) : t.version_id),
    el("td", {}, params),
    el("td", {}, el("span", { class: `pill ${t.status}` }, t.stopped_early ? "stopped early" : t.status)),
    el("td", { class: "num" }, String(t.epochs ?? "–")),
    el("td", { class: "num" }, typeof t.metric === "number" ? fmt(t.metric, 4) : "–"));
}

function showRun(run) {
  tune.run = run;
  $("#tune-run").textContent = `run ${run.id} · ${run.metric || ""} (${run.mode || "max"})`;
  const pill = $("#tune-status");
  pill.hidden = false;
  pill.className = `pill ${run.status}`;
  pill.textContent = run.status;
  const trials = run.trials || [];
  $("#trials tbody").replaceChildren(...(trials.length ? trials.map((t) => trialRow(t, run))
    : [el("tr", {}, el("td", { colspan: 6, class: "empty" }, run.status === "running" ? "Waiting for the first trial…" : "No trials."))]));
  const seen = JSON.stringify(trials.map((t) => [t.version_id, t.status]));
  if (seen !== tune.seen) { tune.seen = seen; if (tune.onTrials && trials.length) tune.onTrials(); }  // trial versions changed
  const best = run.best_version || (run.best && run.best.version_id);
  $("#promote").disabled = !best;
  $("#promote").title = best ? `make version ${best} the model's default` : "no finished trial yet";
}

async function fetchRun(id) {
  const data = await get(tune.modelPath(`/tune_runs/${encodeURIComponent(id)}`));
  return { ...data.tune_run, ...record(data.tune_run) };
}

function follow(id) {
  if (tune.stopPoll) tune.stopPoll();
  tune.stopPoll = poll(async () => {
    const run = await fetchRun(id);
    showRun(run);
    return run.status !== "running";
  }, 2000);
}

async function listRuns() {
  const data = await get(tune.modelPath("/tune_runs"), { per_page: 1000 });
  tune.runs = (data.tune_runs || []).map((r) => ({ ...r, ...record(r) }));
  const select = $("#tune-runs");
  select.replaceChildren(...tune.runs.slice().reverse().map((r) => el("option", { value: r.id }, `${r.id} · ${r.status}`)));
  select.hidden = tune.runs.length < 2;
  return tune.runs;
}

/** After a start: wait for the job's run to appear (or the job to fail), then follow it. */
function awaitRun(job, known) {
  if (tune.stopPoll) tune.stopPoll();
  $("#tune-run").textContent = `job ${job.job_id}: starting…`;
  $("#trials tbody").replaceChildren(el("tr", {}, el("td", { colspan: 6, class: "empty" }, "Starting the search…")));
  tune.stopPoll = poll(async () => {
    const runs = await listRuns();
    const fresh = runs.filter((r) => !known.has(r.id));
    if (fresh.length) { $("#tune-runs").value = fresh[fresh.length - 1].id; follow(fresh[fresh.length - 1].id); return true; }
    let info = null;
    try { info = (await get(tune.modelPath("").replace(/\/models\/.*$/, `/jobs/${encodeURIComponent(job.job_id)}`))).job; } catch { info = null; }
    if (info && (JOB_ENDED.includes(info.status) || info.status === "SUCCEEDED")) {
      const form = $("#tune-form");
      showError(new Error(`the search's job ${info.status.toLowerCase()}: ${info.message || ""} ${(info.log_tail || "").slice(-600)}`), form);
      $("#tune-run").textContent = "";
      return true;
    }
    return false;
  }, 2000);
}

async function start(event) {
  event.preventDefault();
  const form = event.currentTarget;
  clearErrors(form);
  let space;
  try { space = spaceOf(form); } catch (err) { showError(err, form); return; }
  if (!Object.keys(space).length) { showError(new Error("the search space is empty: give a search space for at least one parameter"), form); return; }
  const body = { space, trials: Number($("#tune-trials").value || 0) };
  const concurrent = $("#tune-concurrent").value.trim();
  if (concurrent) body.max_concurrent = Number(concurrent);
  if ($("#tune-metric").value.trim()) body.metric = $("#tune-metric").value.trim();
  if ($("#tune-scheduler").value) body.scheduler = $("#tune-scheduler").value;
  const button = $("#tune-start");
  button.disabled = true;
  try {
    const known = new Set((await listRuns().catch(() => tune.runs)).map((r) => r.id));
    const data = await post(tune.modelPath("/tune_runs"), body);
    toast(`search started (job ${data.job.job_id})`);
    awaitRun(data.job, known);
  } catch (err) {
    showError(err, form);
  } finally {
    button.disabled = false;
  }
}

async function promote() {
  if (!tune.run) return;
  $("#promote").disabled = true;
  await guard(async () => {
    const data = await post(tune.modelPath(`/tune_runs/${encodeURIComponent(tune.run.id)}/promote`), {});
    const meta = record(data.model);
    toast(`version ${meta.default_version || ""} is now the default`);
    if (tune.onPromoted) await tune.onPromoted();
  });
  $("#promote").disabled = false;
}

/** Set up the tuning section: the form (from the template's rows, or name=space lines without them) and the
 *  newest run, followed live while it runs. */
export async function startTuning({ modelPath, rows, onPromoted, onTrials }) {
  tune.modelPath = modelPath;
  tune.onPromoted = onPromoted;
  tune.onTrials = onTrials;
  const fields = $("#tune-fields");
  if (rows && rows.length) tune.form = spaceForm(fields, rows);
  else {
    fields.replaceChildren(el("div", { class: "field", dataset: { field: "space" } },
      el("label", { class: "label", for: "tune-space-lines" }, "Search space"),
      el("textarea", { id: "tune-space-lines", rows: 3, placeholder: "one name=kind:args per line, e.g. lrate=loguniform:1e-4:1e-1" }),
      el("div", { class: "field-error", "data-for": "space", hidden: true })));
  }
  $("#tune-form").addEventListener("submit", start);
  $("#promote").addEventListener("click", promote);
  $("#tune-runs").addEventListener("change", (e) => follow(e.target.value));
  const runs = await guard(listRuns);
  if (runs && runs.length) follow(runs[runs.length - 1].id);
  else if (runs === undefined) $("#tune-run").textContent = "(the runs could not be loaded)";
}
