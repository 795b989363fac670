// The first page: sign in with a key, then the apps the key can see; create and delete apps (a user key).
import { del, get, post, setKey } from "../api.js";
import { $, clearErrors, el, fmtInt, guard, shell, showError, toast, when } from "../ui.js";

async function signIn(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const key = $("#key", form).value.trim();
  clearErrors(form);
  try {
    await get("/v2/apps", { per_page: 1 }, { key });  // any valid key can list (an app key: its own app)
  } catch (err) {
    showError(err.httpStatus === 401 ? new Error(`key: ${err.message}`) : err, form);
    return;
  }
  setKey(key);
  const next = new URLSearchParams(location.search).get("next");
  if (next && next.startsWith("/") && !next.startsWith("//")) location.assign(next);
  else location.reload();
}

async function createApp(event) {
  event.preventDefault();
  const form = event.currentTarget;
  clearErrors(form);
  const id = $("#app-id", form).value.trim();
  const name = $("#app-description", form).value.trim() || undefined;
  try {
    await post("/v2/apps", { apps: [{ id, name }] });
  } catch (err) {
    showError(err, form);
    return;
  }
  toast(`app ${id} created`);
  form.reset();
  await listApps();
}

async function deleteApp(id) {
  if (!confirm(`Delete app ${id} with all its inputs, models and stored objects?`)) return;
  await guard(async () => {
    await del(`/v2/apps/${encodeURIComponent(id)}`);
    toast(`app ${id} deleted`);
    await listApps();
  });
}

async function listApps() {
  const body = $("#apps-table tbody");
  const data = await guard(() => get("/v2/apps", { per_page: 1000 }));
  if (!data) return;
  const rows = data.apps.map((app) => {
    const count = el("td", { class: "num muted" }, "…");
    get(`/v2/apps/${encodeURIComponent(app.id)}/inputs/status`)  // each app's count, filled in as it comes
      .then((r) => { count.textContent = fmtInt(r.counts.processed); count.classList.remove("muted"); })
      .catch(() => { count.textContent = "–"; });
    return el("tr", {},
      el("td", {}, el("a", { href: `/apps/${encodeURIComponent(app.id)}/inputs`, class: "app-link" }, app.id)),
      el("td", {}, app.name && app.name !== app.id ? app.name : ""),
      count,
      el("td", { class: "muted" }, when(app.created_at)),
      el("td", {}, el("button", { type: "button", class: "danger", onclick: () => deleteApp(app.id) }, "Delete")));
  });
  body.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 5, class: "empty" }, "No apps yet: create one above."))]));
}

const key = await shell({ needKey: false });
if (!key) {
  $("#signin").hidden = false;
  $("#signin-form").addEventListener("submit", signIn);
  $("#key").focus();
} else {
  $("#apps").hidden = false;
  $("#create-app").addEventListener("submit", createApp);
  await listApps();
}
