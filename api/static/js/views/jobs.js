// Jobs list: newest first, live while any job is active, pick several to compare.
import { h, clear, fmtDuration, fmtPct, statusBadge, progressBar, timeEl, jobTitle, toast, ACTIVE, METHOD_LABELS, METHOD_SHORT, wallSeconds } from '../dom.js';
import { get, del } from '../api.js';
import { etaText } from '../phase.js';

const PAGE = 25;
const POLL_MS = 2000;

export async function jobsView(root, ctx) {
  const status = ctx.params.get('status') || '';
  // `metadata=key=value` in the page's address: GET /jobs?metadata[key]=value (the API's metadata filter).
  const metadata = ctx.params.get('metadata') || '';
  const metaPair = parseMetadata(metadata);
  const filters = { status, ...(metaPair ? { [`metadata[${metaPair[0]}]`]: metaPair[1] } : {}) };
  const selected = new Set();
  let jobs = [];
  let hasMore = false;
  let timer = null;
  let stopped = false;

  const compareBtn = h('button', { type: 'button', class: 'secondary', disabled: true, onclick: () => ctx.navigate(`#/compare?ids=${[...selected].join(',')}`) }, 'Compare selected');
  const filter = h('select', { id: 'status-filter', onchange: (e) => go(e.target.value, metadata) },
    ['', 'validating_files', 'queued', 'running', 'succeeded', 'failed', 'cancelled'].map((s) =>
      h('option', { value: s, selected: s === status }, s ? s.replace('_', ' ') : 'all')));
  const metaHint = h('span', { class: 'small error-text', id: 'metadata-filter-error', 'aria-live': 'polite' });
  const metaInput = h('input', {
    type: 'search', id: 'metadata-filter', value: metadata, placeholder: 'key=value', size: 14, 'aria-describedby': 'metadata-filter-error',
    onchange: (e) => {
      const text = e.target.value.trim();
      if (text && !parseMetadata(text)) { metaHint.textContent = 'Write key=value'; return; }
      go(status, text);
    },
  });
  const body = h('div', { class: 'jobs-body', 'aria-live': 'polite', 'aria-busy': 'true' }, h('p', { class: 'loading' }, 'Loading jobs…'));
  const more = h('button', { type: 'button', class: 'secondary', hidden: true, onclick: loadMore }, 'Load older jobs');

  clear(root,
    h('div', { class: 'page-head' },
      h('h1', null, 'Jobs'),
      h('div', { class: 'head-actions' },
        h('label', { class: 'inline', for: 'status-filter' }, 'Status ', filter),
        h('label', { class: 'inline', for: 'metadata-filter', title: 'Only jobs whose metadata has this key and value' }, 'Metadata ', metaInput, metaHint),
        compareBtn,
        h('a', { class: 'button primary', href: '#/new' }, 'New job'))),
    h('section', { class: 'panel flush' }, body, h('div', { class: 'more' }, more)));

  function go(newStatus, newMetadata) {
    const q = new URLSearchParams();
    if (newStatus) q.set('status', newStatus);
    if (newMetadata) q.set('metadata', newMetadata);
    ctx.navigate(q.toString() ? `#/?${q}` : '#/');
  }

  // Asks first: the job's metrics, selections, checkpoints and adapter go with it. Only finished jobs are offered;
  // the server refuses (409) a job that is still running, or has an export running, and the toast says why.
  async function remove(job) {
    if (!confirm(`Delete ${jobTitle(job)} (${job.id})? Its metrics, selections, checkpoints and adapter are removed; this cannot be undone.`)) return;
    try {
      await del(`/jobs/${encodeURIComponent(job.id)}`);
      jobs = jobs.filter((j) => j.id !== job.id);
      selected.delete(job.id);
      renderTable();
      toast(`Deleted ${jobTitle(job)}.`);
    } catch (err) {
      toast(err.message, 'error');
    }
  }

  function updateCompare() {
    compareBtn.disabled = selected.size < 2;
    compareBtn.textContent = selected.size ? `Compare selected (${selected.size})` : 'Compare selected';
  }

  function row(job) {
    const box = h('input', {
      type: 'checkbox', checked: selected.has(job.id), 'aria-label': `Select ${jobTitle(job)} for comparison`,
      onchange: (e) => { if (e.target.checked) selected.add(job.id); else selected.delete(job.id); updateCompare(); },
    });
    let eta = '—';
    if (job.status === 'running') eta = etaText(job);
    else if (job.status === 'queued' || job.status === 'validating_files') eta = 'waiting to start';
    else if (job.finished_at && job.started_at) eta = `took ${fmtDuration(wallSeconds(job))}`;
    return h('tr', { 'data-job-id': job.id, 'data-status': job.status },
      h('td', { class: 'sel' }, box),
      h('td', { 'data-label': 'Job' }, h('a', { href: `#/jobs/${job.id}`, class: 'job-link' }, jobTitle(job)), h('div', { class: 'muted mono small' }, job.id)),
      h('td', { 'data-label': 'Model', class: 'nowrap' }, job.model || '—'),
      h('td', { 'data-label': 'Method', class: 'nowrap', title: METHOD_LABELS[job.method] || '' }, METHOD_SHORT[job.method] || job.method || '—'),
      h('td', { 'data-label': 'Budget', class: 'num' }, fmtPct(job.budget, job.budget * 100 % 1 ? 1 : 0)),
      h('td', { 'data-label': 'Status' }, statusBadge(job.status)),
      h('td', { 'data-label': 'Progress', class: 'progress-cell' }, progressBar(job, { compact: true })),
      h('td', { 'data-label': 'ETA', class: 'num' }, eta),
      h('td', { 'data-label': 'Started', class: 'nowrap' }, timeEl(job.started_at)),
      h('td', { 'data-label': 'Finished', class: 'nowrap' }, timeEl(job.finished_at)),
      h('td', null, ACTIVE.has(job.status) ? null : h('button', {
        type: 'button', class: 'secondary small danger-outline', 'data-delete-job': job.id,
        'aria-label': `Delete ${jobTitle(job)}`, onclick: () => remove(job) }, 'Delete')));
  }

  function renderTable() {
    body.setAttribute('aria-busy', 'false');
    if (!jobs.length) {
      clear(body, h('div', { class: 'empty' },
        h('p', { class: 'empty-title' }, status || metaPair ? `No ${status ? `${status.replace('_', ' ')} ` : ''}jobs${metaPair ? ` with ${metadata}` : ''}.` : 'No jobs yet — start one.'),
        h('p', null, 'Upload a JSONL dataset, pick a model and a budget, and watch it train.'),
        h('a', { class: 'button primary', href: '#/new' }, 'Start a job')));
    } else {
      clear(body, h('table', { class: 'table jobs-table' },
        h('thead', null, h('tr', null,
          h('th', { class: 'sel' }, h('span', { class: 'sr-only' }, 'Compare')),
          ['Job', 'Model', 'Method', 'Budget', 'Status', 'Progress', 'ETA', 'Started', 'Finished', ''].map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', null, jobs.map(row))));
    }
    more.hidden = !hasMore;
    updateCompare();
  }

  async function loadFirst() {
    // Re-fetch as many as are shown, so a refresh does not drop pages the user loaded.
    const page = await get('/jobs', { ...filters, limit: Math.max(PAGE, Math.min(100, jobs.length)) });
    const fresh = page.data || [];
    const older = jobs.slice(fresh.length).filter((j) => !fresh.some((f) => f.id === j.id));
    jobs = [...fresh, ...older];
    if (!older.length) hasMore = page.has_more;
    renderTable();
  }

  async function loadMore() {
    more.disabled = true;
    try {
      const page = await get('/jobs', { ...filters, limit: PAGE, after: jobs[jobs.length - 1]?.id });
      jobs.push(...(page.data || []).filter((j) => !jobs.some((x) => x.id === j.id)));
      hasMore = page.has_more;
      renderTable();
    } finally {
      more.disabled = false;
    }
  }

  async function poll() {
    if (stopped) return;
    try {
      if (!document.hidden) await loadFirst();
    } catch (err) {
      console.warn('jobs refresh failed', err);
    }
    // Poll fast while something moves, slowly otherwise (new jobs from other clients still appear).
    const active = jobs.some((j) => ACTIVE.has(j.status));
    if (!stopped) timer = setTimeout(poll, active ? POLL_MS : POLL_MS * 3);
  }

  await loadFirst();
  timer = setTimeout(poll, POLL_MS);
  return () => { stopped = true; clearTimeout(timer); };
}

// 'team=nlp' -> ['team', 'nlp'] (the value may hold '='); null when there is no key before the first '='.
function parseMetadata(text) {
  const at = text.indexOf('=');
  if (at < 1) return null;
  return [text.slice(0, at).trim(), text.slice(at + 1).trim()];
}
