// The hyperparameter form, generated from a template's parameter rows (GET /v2/templates: name, type,
// default, range, description, source, minimum, maximum, exclusive_*, multiple_of, enum, nullable).
// One div.field[data-field=NAME] per parameter: a label, an input [name=NAME] (number with min/max/step,
// checkbox for a bool, select for an enum or a nullable bool, text else) whose placeholder is the template's
// default: an EMPTY field means "use the default", and only filled fields are sent. The seed's parameters
// come first; the rest sit in a <details> "more parameters". Field errors are ui.showError's: each field has
// its .field-error[data-for=NAME]. Also the tuning form's variant: a text input per parameter taking a
// search space ("loguniform:1e-4:1e-1", "choice:16,32", or the call form "loguniform(1e-4, 1e-1)").
import { get } from "./api.js";
import { $$, el } from "./ui.js";

let formCount = 0;
let templatesCache = null;

/** Every template (GET /v2/templates), fetched once per page; an ApiError when the route fails. */
export async function loadTemplates() {
  if (!templatesCache) templatesCache = get("/v2/templates").then((d) => d.templates || []);
  try { return await templatesCache; } catch (err) { templatesCache = null; throw err; }
}

/** The template of a task by name, or undefined. */
export async function findTemplate(task, name) {
  return (await loadTemplates()).find((t) => t.task === task && t.name === name);
}

const isBoolType = (row) => /^bool/.test(String(row.type || "")) || row.range === "true/false";
const isNullable = (row) => row.nullable === true || /none|null/i.test(String(row.type || "")) || /null/.test(row.range || "");
const isInt = (row) => /^int/.test(String(row.type || ""));
const isNumber = (row) => isInt(row) || /^float|^number/.test(String(row.type || ""));

/** The default as people read it. */
export function showDefault(value) {
  if (value === null || value === undefined) return "none";
  if (typeof value === "number") return String(+value.toPrecision(6));
  return String(value);
}

function helpText(row) {
  return [row.type, row.range, row.description].filter(Boolean).join(" · ");
}

function control(row, id) {
  const name = row.name;
  if (Array.isArray(row.enum) && row.enum.length) {
    return el("select", { id, name }, el("option", { value: "" }, `default (${showDefault(row.default)})`),
      row.enum.map((v) => el("option", { value: String(v) }, String(v))));
  }
  if (isBoolType(row) && isNullable(row)) {
    return el("select", { id, name }, el("option", { value: "" }, `default (${showDefault(row.default)})`),
      el("option", { value: "true" }, "true"), el("option", { value: "false" }, "false"));
  }
  if (isBoolType(row)) {
    const box = el("input", { id, name, type: "checkbox" });
    box.checked = row.default === true;
    box.dataset.default = String(row.default === true);
    return box;
  }
  if (isNumber(row)) {
    const step = row.multiple_of ?? (isInt(row) ? 1 : "any");
    return el("input", { id, name, type: "number", inputmode: isInt(row) ? "numeric" : "decimal", step,
      min: row.minimum ?? row.exclusive_minimum, max: row.maximum ?? row.exclusive_maximum,
      placeholder: showDefault(row.default) });
  }
  return el("input", { id, name, type: "text", placeholder: showDefault(row.default) });
}

function field(row, id, input, help) {
  const label = el("label", { class: "label", for: id }, el("code", {}, row.name),
    row.template_default ? el("span", { class: "pill tmpl", title: "the template sets this default" }, "template") : null);
  const wrap = el("div", { class: `field param${input.type === "checkbox" ? " check" : ""}`, dataset: { field: row.name } });
  if (input.type === "checkbox") wrap.append(el("div", { class: "check-row" }, input, label));
  else wrap.append(label, input);
  wrap.append(el("div", { class: "help" }, help), el("div", { class: "field-error", "data-for": row.name, hidden: true }));
  return wrap;
}

function layout(container, rows, make) {
  const seed = rows.filter((r) => r.source === "seed");
  const rest = rows.filter((r) => r.source !== "seed");
  const first = seed.length ? seed : rows;
  const more = seed.length ? rest : [];
  const grid = el("div", { class: "params-grid" }, first.map(make));
  const parts = [grid];
  if (more.length) {
    parts.push(el("details", { class: "more-params" }, el("summary", {}, `more parameters (${more.length})`),
      el("div", { class: "params-grid" }, more.map(make))));
  }
  container.replaceChildren(...parts);
}

/** Build the hyperparameter form in `container` from `rows`; returns {values(), clientErrors()}. */
export function paramsForm(container, rows, { values = {} } = {}) {
  const prefix = `p${(formCount += 1)}-`;
  const inputs = new Map();
  layout(container, rows, (row) => {
    const input = control(row, prefix + row.name);
    inputs.set(row.name, [row, input]);
    const v = values[row.name];
    if (v !== undefined && v !== null) {
      if (input.type === "checkbox") input.checked = v === true;
      else input.value = String(v);
    }
    return field(row, prefix + row.name, input, helpText(row));
  });
  return {
    /** The filled fields, typed: numbers as numbers, bools as bools (a checkbox only when changed). */
    values() {
      const out = {};
      for (const [name, [row, input]] of inputs) {
        if (input.type === "checkbox") {
          if (String(input.checked) !== input.dataset.default) out[name] = input.checked;
          continue;
        }
        const text = input.value.trim();
        if (text === "") continue;
        if (input.tagName === "SELECT" && (text === "true" || text === "false") && isBoolType(row)) out[name] = text === "true";
        else if (input.type === "number") out[name] = Number(text);
        else out[name] = text;
      }
      return out;
    },
    /** Problems the browser sees before sending ("abc" in a number field): "invalid NAME=…: …" texts. */
    clientErrors() {
      const out = [];
      for (const [name, [row, input]] of inputs) {
        if (input.type === "number" && input.validity.badInput) out.push(`invalid ${name}=…: expected ${isInt(row) ? "an integer" : "a number"}`);
      }
      return out;
    },
  };
}

/** Parse the "name=value" lines of the extra-parameters box: values as JSON when they read as JSON
 *  (numbers, true/false, null), else as text. Returns {params, errors}. */
export function parseExtra(text) {
  const params = {};
  const errors = [];
  for (const [i, raw] of String(text || "").split(/\r?\n/).entries()) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    const at = line.indexOf("=");
    if (at < 1) { errors.push(`extra parameters line ${i + 1}: expected name=value, got ${JSON.stringify(line)}`); continue; }
    const name = line.slice(0, at).trim();
    const value = line.slice(at + 1).trim();
    let parsed = value;
    try { parsed = JSON.parse(value); } catch { parsed = value; }
    if (typeof parsed === "object" && parsed !== null) parsed = value;
    params[name] = parsed;
  }
  return { params, errors };
}

/** A search space as `deeptrain tune` takes it: "loguniform(1e-4, 0.1)" -> "loguniform:1e-4:0.1",
 *  "choice(16, 32)" -> "choice:16,32"; the colon form passes through. */
export function spaceSpec(text) {
  const s = String(text || "").trim();
  const call = /^([a-z_]+)\s*\((.*)\)$/i.exec(s);
  if (!call) return s;
  const kind = call[1].toLowerCase();
  const args = call[2].split(",").map((a) => a.trim()).filter(Boolean);
  return kind === "choice" ? `choice:${args.join(",")}` : `${kind}:${args.join(":")}`;
}

/** Example search spaces people can start from. */
function spaceExample(row) {
  if (row.name === "lrate" || /lrate$/.test(row.name)) return "loguniform:1e-4:1e-1";
  if (row.name === "batch_size") return "choice:16,32,64";
  if (isBoolType(row)) return "choice:true,false";
  if (Array.isArray(row.enum)) return `choice:${row.enum.join(",")}`;
  const d = typeof row.default === "number" ? row.default : null;
  const lo = row.minimum ?? row.exclusive_minimum, hi = row.maximum ?? row.exclusive_maximum;
  if (isInt(row)) {
    const q = row.multiple_of || 1;
    let a = Math.max(lo ?? 0, Math.floor((d ?? 2) / 2)), b = Math.min(hi ?? Infinity, Math.max(a + 2, 2 * (d ?? 4)));
    if (q > 1) { a = Math.ceil(a / q) * q; b = Math.max(a + q, Math.floor(b / q) * q); return `qrandint:${a}:${b}:${q}`; }
    return `randint:${a}:${b + 1}`;
  }
  if (isNumber(row)) {
    if (d && d > 0) return `loguniform:${+(d / 10).toPrecision(2)}:${+Math.min(hi ?? Infinity, d * 10).toPrecision(2)}`;
    return `uniform:${lo ?? 0}:${hi ?? 1}`;
  }
  return "choice:a,b";
}

/** The tuning form's fields: a text input [name=NAME] per parameter holding its search space (empty: not
 *  searched). Returns {space()}: {name: "kind:args"} of the filled ones. */
export function spaceForm(container, rows) {
  const prefix = `s${(formCount += 1)}-`;
  const tunable = rows.filter((r) => !["num_workers", "use_gpu"].includes(r.name));
  layout(container, tunable, (row) => {
    const input = el("input", { id: prefix + row.name, name: row.name, type: "text", placeholder: spaceExample(row),
      autocomplete: "off" });
    return field(row, prefix + row.name, input, `default ${showDefault(row.default)} · ${row.range || row.type}`);
  });
  return {
    space() {
      const out = {};
      for (const input of $$("input[name]", container)) {
        if (input.value.trim()) out[input.name] = spaceSpec(input.value);
      }
      return out;
    },
  };
}
