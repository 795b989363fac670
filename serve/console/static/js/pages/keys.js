// The keys page: create an app key with scopes (POST /v2/users/me/keys; the secret is shown once), list the
// keys (on /keys every key a user key sees, on /apps/{app}/keys the app's) and revoke them
// (DELETE /v2/users/me/keys/{id}). An app key without the admin scope gets the server's message, not a
// broken page.
import { appPath, del, get, getKey, post } from "../api.js";
import { $, $$, clearErrors, el, errorText, guard, page, shell, showError, toast, when } from "../ui.js";

const ownKeyId = () => (getKey().split("_")[1] || "");

async function loadApps() {
  if (page.app) return;
  const select = $("#key-app");
  try {
    const data = await get("/v2/apps", { per_page: 1000 });
    const apps = data.apps || [];
    select.replaceChildren(...(apps.length ? apps.map((a) => el("option", { value: a.id }, a.id))
      : [el("option", { value: "" }, "no apps yet")]));
  } catch (err) {
    select.replaceChildren(el("option", { value: "" }, "apps unavailable"));
    showError(err, $("#key-form"));
  }
}

function keyRow(k) {
  const rec = (k.metadata && k.metadata.deeptrain) || {};
  const id = rec.id || k.id;
  const revoked = Boolean(rec.revoked_at);
  const app = (k.apps && k.apps[0] && k.apps[0].id) || rec.app_id;
  const mine = id === ownKeyId();
  return el("tr", { dataset: { key: id }, class: revoked ? "revoked" : "" },
    el("td", { class: "mono" }, `dtk_${id}_…`, mine ? el("span", { class: "pill ok you" }, "this session") : null,
      rec.kind === "user" ? el("span", { class: "pill" }, "user") : null),
    el("td", {}, k.description && k.description !== id ? k.description : el("span", { class: "muted" }, "–")),
    el("td", {}, el("div", { class: "chips" }, (k.scopes || []).map((s) => el("span", { class: "scope-chip" }, s)))),
    el("td", {}, app ? el("a", { href: `/apps/${encodeURIComponent(app)}/keys`, class: "mono" }, app)
      : el("span", { class: "muted" }, "every app")),
    el("td", { class: "muted" }, when(rec.created_at || k.created_at)),
    el("td", { class: "actions" }, revoked
      ? el("span", { class: "pill cancelled", title: when(rec.revoked_at) }, "revoked")
      : el("button", { type: "button", class: "danger revoke", onclick: () => revoke(id, mine) }, "Revoke")));
}

async function listKeys() {
  const body = $("#keys-table tbody");
  let data;
  try {
    data = await get(page.app ? appPath(page.app, "/keys") : "/v2/users/me/keys", { per_page: 1000 });
  } catch (err) {
    body.replaceChildren(el("tr", {}, el("td", { colspan: 6, class: "empty error-text" }, errorText(err))));
    return;
  }
  const revoked = (k) => Boolean(k.metadata && k.metadata.deeptrain && k.metadata.deeptrain.revoked_at);
  const keys = (data.keys || []).slice().sort((a, b) => revoked(a) - revoked(b));  // revoked ones last
  body.replaceChildren(...(keys.length ? keys.map(keyRow)
    : [el("tr", {}, el("td", { colspan: 6, class: "empty" }, "No keys yet: create one above."))]));
}

async function revoke(id, mine) {
  const warning = mine ? "\n\nThis is the key this session is signed in with: you will be signed out." : "";
  if (!confirm(`Revoke key ${id}? Clients using it stop working at once.${warning}`)) return;
  await guard(async () => {
    await del(`/v2/users/me/keys/${encodeURIComponent(id)}`);
    toast(`key ${id} revoked`);
    if (mine) { location.assign("/"); return; }
    await listKeys();
  });
}

async function createKey(event) {
  event.preventDefault();
  const form = event.currentTarget;
  clearErrors(form);
  const app = page.app || $("#key-app").value;
  const scopes = $$("input[name=scope]:checked", form).map((n) => n.value);
  const description = $("#key-description").value.trim();
  if (!app) { showError(new Error("app: choose the app the key acts in"), form); return; }
  const button = $("#key-create");
  button.disabled = true;
  try {
    const data = await post("/v2/users/me/keys", { keys: [{ description, scopes, apps: [{ id: app }] }] });
    const secret = data.keys[0].id;
    $("#new-key").textContent = secret;
    $("#copy-status").textContent = "";
    $("#new-key-card").hidden = false;
    $("#key-description").value = "";
    toast(`key created for ${app}`);
    await listKeys();
  } catch (err) {
    // the body's field paths (keys.0.scopes) as the form names its fields
    const text = errorText(err).replace(/keys\.\d+\.scopes(\.\d+)?/g, "scope").replace(/keys\.\d+\.description/g, "description")
      .replace(/keys\.\d+\.apps(\.\d+\.id)?/g, "app");
    if (err.httpStatus === 401 || err.httpStatus === 403) {  // about the signed-in key, not a field
      clearErrors(form);
      const top = $(".form-error", form);
      top.textContent = text;
      top.hidden = false;
    } else showError(new Error(text), form);
  } finally {
    button.disabled = false;
  }
}

async function copyKey() {
  const text = $("#new-key").textContent;
  try {
    await navigator.clipboard.writeText(text);
    $("#copy-status").textContent = "copied";
  } catch {
    const range = document.createRange();  // no clipboard permission: select it for Ctrl+C
    range.selectNodeContents($("#new-key"));
    getSelection().removeAllRanges();
    getSelection().addRange(range);
    $("#copy-status").textContent = "selected: press Ctrl+C";
  }
}

if (await shell()) {
  $("#key-form").addEventListener("submit", createKey);
  $("#copy-key").addEventListener("click", copyKey);
  await Promise.all([loadApps(), listKeys()]);
}
