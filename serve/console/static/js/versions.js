// What the models pages share about models and their versions: deeptrain's own record of one (under
// metadata.deeptrain), the status word, the status pill, the headline test metric of a task.
import { el } from "./ui.js";

/** deeptrain's record of a rendered model, version or tuning run (``metadata.deeptrain``). */
export function record(item) {
  const meta = (item && item.metadata) || {};
  return meta.deeptrain || {};
}

// the headline metric per task (what tuning maximizes by default), then a fallback
export const METRICS = { classification: ["top1", "macro_f1"], detection: ["map", "ap50"], embedding: ["recall@1", "map@r"] };

/** The status word of a rendered model version (deeptrain's record has it verbatim). */
export function statusOf(version) {
  const meta = record(version);
  return meta.status || (version && version.status && version.status.description) || "";
}

/** The version's test metric for its task as [name, value], or null. */
export function testMetric(version, task) {
  const metrics = record(version).metrics || {};
  const key = (METRICS[task] || []).find((k) => typeof metrics[k] === "number");
  return key ? [key, metrics[key]] : null;
}

export function statusPill(word) {
  return el("span", { class: `pill ${word}` }, word || "no versions");
}
