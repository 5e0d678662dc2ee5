// Small DOM and formatting helpers. Text always goes in as text nodes (never innerHTML): previews are user data.

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [key, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (key === 'class') el.className = value;
      else if (key === 'dataset') Object.assign(el.dataset, value);
      else if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
      else if (key === 'style' && typeof value === 'object') Object.assign(el.style, value);
      else if (key in el && typeof value !== 'string') el[key] = value;
      else el.setAttribute(key, value === true ? '' : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function $(selector, root = document) {
  return root.querySelector(selector);
}

let toastTimer = null;
export function toast(message, kind = 'info') {
  const el = document.getElementById('toast');
  el.textContent = message;
  el.dataset.kind = kind;
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.hidden = true; }, 5000);
}

// ---- numbers with units ----

export function isNum(v) {
  return typeof v === 'number' && Number.isFinite(v);
}

export function fmtNum(v, digits = 4) {
  if (!isNum(v)) return '—';
  if (v === 0) return '0';
  const abs = Math.abs(v);
  if (abs >= 1e6 || abs < 1e-3) return v.toExponential(Math.max(0, digits - 2)).replace('e+', 'e');
  return Number(v.toPrecision(digits)).toLocaleString('en-US', { maximumFractionDigits: 6 });
}

export function fmtInt(v) {
  return isNum(v) ? Math.round(v).toLocaleString('en-US') : '—';
}

export function fmtPct(fraction, digits = 1) {
  return isNum(fraction) ? `${(fraction * 100).toFixed(digits)} %` : '—';
}

export function fmtBytes(n) {
  if (!isNum(n)) return '—';
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return `${i === 0 ? n : n.toFixed(n < 10 ? 2 : 1)} ${units[i]}`;
}

export function fmtDuration(seconds) {
  if (!isNum(seconds)) return '—';
  if (seconds < 1) return `${(seconds * 1000).toFixed(0)} ms`;
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s`;
  const s = Math.round(seconds);
  const d = Math.floor(s / 86400), hr = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  if (d) return `${d} d ${hr} h`;
  if (hr) return `${hr} h ${m} min`;
  return `${m} min ${sec} s`;
}

// Timestamps arrive as ISO strings or unix seconds (the OpenAI shape); both become Date.
export function toDate(t) {
  if (t === null || t === undefined || t === '') return null;
  if (typeof t === 'number') return new Date(t < 1e12 ? t * 1000 : t);
  // An ISO time without an offset is UTC on this server; JS would read it as local time.
  const d = new Date(/T\d\d:\d\d(:\d\d(\.\d+)?)?$/.test(t) ? `${t}Z` : t);
  return Number.isNaN(d.getTime()) ? null : d;
}

export function fmtTime(t) {
  const d = toDate(t);
  if (!d) return '—';
  const pad = (x) => String(x).padStart(2, '0');
  const today = new Date();
  const time = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  if (d.toDateString() === today.toDateString()) return `today ${time}`;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${time}`;
}

export function timeEl(t) {
  const d = toDate(t);
  if (!d) return h('span', { class: 'muted' }, '—');
  return h('time', { datetime: d.toISOString(), title: d.toString() }, fmtTime(d));
}

export function secondsBetween(a, b) {
  const da = toDate(a), db = toDate(b);
  return da && db ? (db - da) / 1000 : null;
}

// ---- job vocabulary ----

export const ACTIVE = new Set(['validating_files', 'queued', 'running', 'cancelling']);
export const TERMINAL = new Set(['succeeded', 'failed', 'cancelled']);

// The selection methods as the server's registry (uds/methods.py) names and explains them, read from the OpenAPI
// schema (the `x-methods` of POST /api/v1/jobs's `method`) by loadMethods() before the first view renders.
export const METHOD_LABELS = {};
export const METHOD_SHORT = {};
export const METHOD_HELP = {};
export const SELECTORS = []; // the methods that select: all but full

export async function loadMethods() {
  let methods = [];
  try {
    const res = await fetch('/openapi.json', { headers: { Accept: 'application/json' } });
    const spec = res.ok ? await res.json() : {};
    let schema = spec.paths?.['/api/v1/jobs']?.post?.requestBody?.content?.['application/json']?.schema;
    if (schema?.$ref) schema = spec.components?.schemas?.[schema.$ref.split('/').pop()];
    methods = schema?.properties?.method?.['x-methods'] || [];
  } catch (err) {
    console.error(err);
  }
  for (const m of methods) {
    METHOD_LABELS[m.name] = m.label;
    METHOD_SHORT[m.name] = m.short;
    METHOD_HELP[m.name] = m.help;
    if (m.selects) SELECTORS.push(m.name);
  }
}

export function statusBadge(status) {
  const label = (status || 'unknown').replace(/_/g, ' ');
  return h('span', { class: `badge status-${status || 'unknown'}`, 'data-status': status }, label);
}

export function jobFraction(job) {
  const p = job.progress || {};
  if (job.status === 'succeeded') return 1;
  if (isNum(p.fraction)) return p.fraction;
  if (isNum(p.step) && isNum(p.total_steps) && p.total_steps > 0) return p.step / p.total_steps;
  return 0;
}

export function progressBar(job, { compact = false } = {}) {
  const fraction = Math.max(0, Math.min(1, jobFraction(job)));
  const p = job.progress || {};
  const steps = isNum(p.total_steps) ? `step ${fmtInt(p.step || 0)} / ${fmtInt(p.total_steps)}` : '';
  const label = `${Math.floor(fraction * 100)} %${steps ? ' · ' + steps : ''}`;
  return h('div', { class: `progress${compact ? ' compact' : ''}` },
    h('div', {
      class: `bar status-${job.status}`, role: 'progressbar', 'aria-valuemin': '0', 'aria-valuemax': '100',
      'aria-valuenow': String(Math.round(fraction * 100)), 'aria-label': `Progress of ${job.name || job.id}`,
    }, h('span', { style: { width: `${fraction * 100}%` } })),
    h('span', { class: 'progress-label' }, label));
}

export function jobTitle(job) {
  return job.name || job.id;
}

// Short enough for a chart legend: the name, or the method and the id's tail.
export function jobLabel(job) {
  return job.name || `${job.method} …${String(job.id).slice(-6)}`;
}

export function wallSeconds(job) {
  if (!job.started_at) return null;
  return secondsBetween(job.started_at, job.finished_at || new Date());
}
