// The console's HTTP client: every call goes to the public /v2 API with the signed-in key, exactly as any
// client's would. Answers carry Clarifai's envelope ({status: {code, description, details}}); a non-2xx
// answer (or a network failure) becomes an ApiError, which the pages show next to the field it names or in
// the banner: no page breaks on a 4xx or 5xx.

const KEY = "deeptrain.key";

export class ApiError extends Error {
  constructor(httpStatus, status, body) {
    const text = (status && (status.details || status.description)) || `HTTP ${httpStatus}`;
    super(text);
    this.httpStatus = httpStatus;           // 0: the server could not be reached
    this.code = status ? status.code : 0;   // Clarifai's numeric code
    this.description = status ? status.description : "";
    this.body = body;
  }
}

export function getKey() { return localStorage.getItem(KEY) || ""; }
export function setKey(key) { localStorage.setItem(KEY, key); }
export function clearKey() { localStorage.removeItem(KEY); }

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v === undefined || v === null || v === "") continue;
    for (const item of Array.isArray(v) ? v : [v]) q.append(k, String(item));
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}

/** Call the API: request("GET", "/v2/apps/a/inputs", {params: {page: 1}}) or with {json: body}. */
export async function request(method, path, { json, params, key, signal, raw } = {}) {
  const headers = { Accept: "application/json" };
  const k = key ?? getKey();
  if (k) headers.Authorization = `Key ${k}`;
  let body;
  if (json !== undefined) { headers["Content-Type"] = "application/json"; body = JSON.stringify(json); }
  let response;
  try {
    response = await fetch(path + query(params), { method, headers, body, signal });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, { code: 0, description: "the server could not be reached", details: String(err) });
  }
  if (raw && response.ok) return response;
  let data = null;
  try { data = await response.json(); } catch { data = null; }
  if (!response.ok) {
    const status = data && data.status ? data.status : { code: 0, description: `HTTP ${response.status}` };
    throw new ApiError(response.status, status, data);
  }
  return data;
}

export const get = (path, params, opts = {}) => request("GET", path, { ...opts, params });
export const post = (path, json, opts = {}) => request("POST", path, { ...opts, json });
export const patch = (path, json, opts = {}) => request("PATCH", path, { ...opts, json });
export const del = (path, json, opts = {}) => request("DELETE", path, { ...opts, json });

/** The path of an app's route: appPath("a", "/inputs") -> "/v2/apps/a/inputs". */
export function appPath(appId, rest = "") {
  return `/v2/apps/${encodeURIComponent(appId)}${rest}`;
}

/** An image route's bytes as an object URL (an <img> cannot send the key itself). */
export async function imageUrl(path, params) {
  const response = await request("GET", path, { params, raw: true });
  return URL.createObjectURL(await response.blob());
}

/** Read a File as base64 (no data: prefix). */
export function fileBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1] || "");
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}
