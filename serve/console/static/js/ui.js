// DOM helpers shared by the pages: building elements, the banner and toasts, showing an API error next to
// the form field it names, the page shell (who is signed in, sign out), paging controls.
import { ApiError, clearKey, get, getKey } from "./api.js";

export const $ = (sel, root = document) => root.querySelector(sel);
export const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));
export const page = document.body.dataset;  // {page, app, model, version, input}

/** el("button", {class: "primary", onclick: f}, "Save") — attributes, properties (on*, dataset), children. */
export function el(tag, attrs = {}, ...children) {
  const node = tag === "svg" || attrs.svg ? document.createElementNS("http://www.w3.org/2000/svg", tag)
    : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false || k === "svg") continue;
    if (k.startsWith("on") && typeof v === "function") node.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** An SVG element: svg("rect", {x: 1, ...}). */
export function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) node.setAttribute(k, String(v));
  for (const child of children.flat()) if (child) node.append(child instanceof Node ? child : String(child));
  return node;
}

export function banner(message, kind = "error") {
  const b = $("#banner");
  if (!message) { b.hidden = true; b.textContent = ""; return; }
  b.className = `banner ${kind}`;
  b.replaceChildren(el("span", {}, message), el("button", { class: "link", type: "button", onclick: () => banner("") }, "dismiss"));
  b.hidden = false;
}

export function toast(message, kind = "ok") {
  const t = el("div", { class: `toast ${kind}`, role: "status" }, message);
  $("#toasts").append(t);
  setTimeout(() => t.remove(), 4000);
}

/** The text of an error for people: the server's message (its HTTP status when it is a server error). */
export function errorText(err) {
  if (err instanceof ApiError) {
    if (err.httpStatus === 0) return `The server could not be reached: ${err.message}`;
    const prefix = err.httpStatus >= 500 ? `Server error (${err.httpStatus}): ` : "";
    return prefix + err.message;
  }
  return String(err && err.message ? err.message : err);
}

/** Clear a form's field errors. */
export function clearErrors(form) {
  for (const node of $$(".field-error", form)) { node.textContent = ""; node.hidden = true; }
  for (const node of $$("[aria-invalid]", form)) node.removeAttribute("aria-invalid");
  const top = $(".form-error", form);
  if (top) { top.textContent = ""; top.hidden = true; }
}

/** Which of the form's fields one problem of the server's message is about: `invalid NAME=…` (the
 *  parameter schema's wording), `A and B were both given`, else the one field it names — none when it names
 *  several, or suggests one ("did you mean 'lrate'?" is about an unknown name, not about lrate). */
export function fieldsOf(part, names) {
  const word = (n) => new RegExp(`(^|[^A-Za-z0-9_])${n}([^A-Za-z0-9_]|$)`);
  const invalid = /invalid (?:[a-z]+ )?([A-Za-z0-9_]+)[= ]/.exec(part);
  if (invalid && names.includes(invalid[1])) return [invalid[1]];
  const both = /^([A-Za-z0-9_]+(?: and [A-Za-z0-9_]+)+) were both given/.exec(part);
  if (both) return both[1].split(" and ").filter((n) => names.includes(n));
  if (/did you mean/.test(part)) return [];
  const named = names.filter((n) => word(n).test(part));
  return named.length === 1 ? named : (named.length ? null : []);  // null: several (follows the previous part)
}

/** Show an API error on a form: each problem of the server's message (problems are separated by "; ")
 *  goes next to the field it is about (a wrapper [data-field=NAME] holding a .field-error[data-for=NAME]);
 *  the rest goes to the form's .form-error, or the banner. */
export function showError(err, form = null) {
  const text = errorText(err);
  if (!form) { banner(text); return; }
  clearErrors(form);
  const names = $$("[data-field]", form).map((n) => n.dataset.field);
  const unplaced = [];
  let previous = [];
  for (const part of text.split(/;\s+/)) {
    let fields = fieldsOf(part, names);
    if (fields === null) fields = previous;
    const slots = fields.map((n) => [n, $(`.field-error[data-for="${n}"]`, form)]).filter(([, slot]) => slot);
    for (const [name, slot] of slots) {
      slot.textContent = slot.textContent ? `${slot.textContent}; ${part}` : part;
      slot.hidden = false;
      const input = $(`[data-field="${name}"] :is(input,select,textarea)`, form) || $(`[name="${name}"]`, form);
      if (input) input.setAttribute("aria-invalid", "true");
    }
    if (!slots.length) unplaced.push(part);
    previous = slots.map(([n]) => n);
  }
  if (unplaced.length) {
    const top = $(".form-error", form);
    if (top) { top.textContent = unplaced.join("; "); top.hidden = false; } else banner(unplaced.join("; "));
  }
  // the first problem in view: the submit button is often far below the field it is about
  const first = $$(".form-error:not([hidden]), .field-error:not([hidden])", form)[0];
  if (first && first.scrollIntoView) first.scrollIntoView({ block: "center" });
}

/** Run an async action, showing its error instead of breaking the page; returns its result or undefined. */
export async function guard(action, form = null) {
  try {
    return await action();
  } catch (err) {
    if (err && err.name === "AbortError") return undefined;
    showError(err, form);
    return undefined;
  }
}

/** The page shell: with no key, the sign-in page; otherwise who is signed in and the sign-out button. */
export async function shell({ needKey = true } = {}) {
  const key = getKey();
  if (needKey && !key) { location.assign(`/?next=${encodeURIComponent(location.pathname)}`); return null; }
  const out = $("#sign-out");
  out.hidden = !key;
  out.onclick = () => { clearKey(); location.assign("/"); };
  if (key) $("#who").textContent = `key …${key.slice(-4)}`;
  return key;
}

/** Paging controls: pager(container, {page, perPage, total, onPage}). */
export function pager(container, { page: p, perPage, total, onPage }) {
  const pages = Math.max(1, Math.ceil((total ?? 0) / perPage));
  const go = (n) => () => onPage(Math.min(Math.max(1, n), pages));
  container.replaceChildren(
    el("button", { type: "button", disabled: p <= 1, onclick: go(p - 1), "aria-label": "previous page" }, "‹"),
    el("span", { class: "muted" }, total === undefined ? `page ${p}` : `page ${p} of ${pages} · ${fmtInt(total)}`),
    el("button", { type: "button", disabled: p >= pages, onclick: go(p + 1), "aria-label": "next page" }, "›"),
  );
}

export const fmtInt = (n) => (n ?? 0).toLocaleString("en-US");
export const fmt = (x, digits = 3) => (typeof x === "number" && Number.isFinite(x) ? x.toFixed(digits) : "–");
export const pct = (x) => (typeof x === "number" && Number.isFinite(x) ? `${(100 * x).toFixed(1)}%` : "–");
export const when = (iso) => (iso ? new Date(iso).toLocaleString() : "–");

/** Poll fn every ms until it returns true or the page is left; returns a stop function. */
export function poll(fn, ms) {
  let stopped = false;
  let timer = null;
  const tick = async () => {
    if (stopped) return;
    let done = false;
    try { done = await fn(); } catch (err) { banner(errorText(err)); }
    if (!done && !stopped) timer = setTimeout(tick, ms);
  };
  tick();
  return () => { stopped = true; clearTimeout(timer); };
}

export { get };
