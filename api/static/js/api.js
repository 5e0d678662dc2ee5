// The dashboard's only way to the server: the public REST API under /api/v1, with the user's key if any.

const KEY_STORAGE = 'uds.apiKey';
const BASE = '/api/v1';

export class ApiError extends Error {
  constructor(status, error, body) {
    super(error?.message || `HTTP ${status}`);
    this.status = status;
    this.type = error?.type || null;
    this.code = error?.code || null;
    this.param = error?.param || null;
    // Dataset problems come next to `error` (the service's shape) or inside it; accept both.
    const problems = error?.problems ?? body?.problems;
    this.problems = Array.isArray(problems) ? problems : [];
  }
}

export function getKey() {
  try { return localStorage.getItem(KEY_STORAGE) || ''; } catch { return ''; }
}

export function setKey(key) {
  validated.clear(); // another key sees other answers
  try {
    if (key) localStorage.setItem(KEY_STORAGE, key);
    else localStorage.removeItem(KEY_STORAGE);
  } catch { /* private mode: the key lives for this page only */ }
}

function authHeaders() {
  const key = getKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

export function url(path, query) {
  const u = new URL(BASE + path, location.origin);
  for (const [k, v] of Object.entries(query || {})) {
    if (v !== null && v !== undefined && v !== '') u.searchParams.set(k, String(v));
  }
  return u.pathname + u.search;
}

async function errorFrom(res) {
  let body = null;
  try { body = await res.json(); } catch { /* not JSON: a proxy or a crash page */ }
  let error = body?.error;
  if (!error && body?.detail) {
    // FastAPI's default shape, in case a route slips past the service's error handler.
    error = { message: typeof body.detail === 'string' ? body.detail : JSON.stringify(body.detail) };
  }
  if (!error) error = { message: `${res.status} ${res.statusText || 'error'}` };
  return new ApiError(res.status, error, body);
}

// Polls revalidate: the last answer of each GET is kept with its ETag and sent back as If-None-Match; a 304
// (nothing changed) returns the kept answer, so the view stays as it is and the server skips building the body.
const VALIDATED_MAX = 200;
const validated = new Map(); // `${key} ${url}` -> { etag, body }

function remember(cacheKey, etag, body) {
  validated.delete(cacheKey);
  if (validated.size >= VALIDATED_MAX) validated.delete(validated.keys().next().value); // the oldest
  validated.set(cacheKey, { etag, body });
}

export async function request(path, { method = 'GET', query, json, form, signal } = {}) {
  const headers = { Accept: 'application/json', ...authHeaders() };
  const target = url(path, query);
  const cacheKey = method === 'GET' ? `${getKey()} ${target}` : null;
  const kept = cacheKey ? validated.get(cacheKey) : undefined;
  if (kept) headers['If-None-Match'] = kept.etag;
  let body;
  if (json !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(json);
  } else if (form) {
    body = form;
  }
  let res;
  try {
    res = await fetch(target, { method, headers, body, signal });
  } catch (err) {
    if (err.name === 'AbortError') throw err;
    throw new ApiError(0, { message: 'Cannot reach the server. Is `uds serve` running?', type: 'network_error' });
  }
  if (res.status === 304 && kept) return structuredClone(kept.body); // a copy: views may change what they get
  if (!res.ok) {
    const error = await errorFrom(res);
    if (res.status === 401) window.dispatchEvent(new CustomEvent('uds:unauthorized', { detail: error.message }));
    throw error;
  }
  if (res.status === 204) return null;
  const data = await res.json();
  const etag = res.headers.get('ETag');
  if (cacheKey && etag) remember(cacheKey, etag, data);
  return data;
}

export const get = (path, query, opts) => request(path, { ...opts, query });
export const post = (path, json, opts) => request(path, { ...opts, method: 'POST', json });
export const del = (path, opts) => request(path, { ...opts, method: 'DELETE' });

// Uploads with progress: fetch cannot report upload progress, XMLHttpRequest can.
export function upload(path, file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', BASE + path);
    xhr.setRequestHeader('Accept', 'application/json');
    const key = getKey();
    if (key) xhr.setRequestHeader('Authorization', `Bearer ${key}`);
    xhr.upload.onprogress = (e) => { if (e.lengthComputable && onProgress) onProgress(e.loaded / e.total); };
    xhr.onerror = () => reject(new ApiError(0, { message: 'Upload failed: cannot reach the server.', type: 'network_error' }));
    xhr.onload = () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch { /* keep null */ }
      if (xhr.status >= 200 && xhr.status < 300) return resolve(body);
      const error = body?.error || (body?.detail ? { message: String(body.detail) } : { message: `HTTP ${xhr.status}` });
      if (xhr.status === 401) window.dispatchEvent(new CustomEvent('uds:unauthorized', { detail: error.message }));
      reject(new ApiError(xhr.status, error, body));
    };
    const form = new FormData();
    form.append('file', file, file.name);
    xhr.send(form);
  });
}

// Downloads that need the key go through fetch + a blob; without auth a plain link streams instead.
export async function download(path, fallbackName) {
  const res = await fetch(url(path), { headers: authHeaders() });
  if (!res.ok) throw await errorFrom(res);
  const blob = await res.blob();
  const disposition = res.headers.get('Content-Disposition') || '';
  const match = /filename\*?=(?:UTF-8'')?"?([^";]+)"?/i.exec(disposition);
  const name = match ? decodeURIComponent(match[1]) : fallbackName;
  const href = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = href;
  a.download = name;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(href), 60_000);
}

// Follows `after` cursors until `max` items or the end.
export async function listAll(path, query = {}, max = 500) {
  const items = [];
  let after = null;
  for (;;) {
    const page = await get(path, { ...query, after, limit: Math.min(100, max - items.length) });
    items.push(...(page.data || []));
    if (!page.has_more || items.length >= max || !page.last_id) return items;
    after = page.last_id;
  }
}
