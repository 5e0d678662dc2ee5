// Datasets: upload (with line-numbered problems), the list, and one dataset's rows.
import { h, clear, fmtInt, fmtBytes, timeEl, toast } from '../dom.js';
import { get, del, upload } from '../api.js';
import { problemsBox } from './newjob.js';
import { renderExample } from './rowdialog.js';

const PAGE = 25;

export async function datasetsView(root, ctx) {
  let datasets = [];
  let hasMore = false;
  const listBox = h('div', { 'aria-live': 'polite' }, h('p', { class: 'loading' }, 'Loading datasets…'));
  const status = h('div', { class: 'upload-status', 'aria-live': 'polite', id: 'upload-status' });
  const more = h('button', { type: 'button', class: 'secondary', hidden: true, onclick: () => load(true) }, 'Load older datasets');
  const fileInput = h('input', { type: 'file', id: 'ds-file', accept: '.jsonl,.json,application/jsonl,text/plain', onchange: onFile });

  clear(root,
    h('div', { class: 'page-head' }, h('h1', null, 'Datasets')),
    h('section', { class: 'panel' },
      h('div', { class: 'field' }, h('label', { for: 'ds-file' }, 'Upload a JSONL dataset'), fileInput,
        h('p', { class: 'hint' }, 'Chat ({"messages": [...]}), Alpaca, prompt / completion or ShareGPT ({"conversations": [...]}), one JSON object per line. Nothing is stored if any line has a problem.')),
      status),
    h('section', { class: 'panel flush' }, listBox, h('div', { class: 'more' }, more)));

  async function onFile() {
    const file = fileInput.files[0];
    if (!file) return;
    clear(status, h('p', { class: 'loading' }, `Uploading and validating ${file.name}…`));
    try {
      const ds = await upload('/datasets', file);
      clear(status, h('p', { class: 'ok-text', id: 'upload-ok' }, `✓ ${ds.filename}: ${fmtInt(ds.n_examples)} examples, ${ds.format} format. `,
        h('a', { href: `#/new` }, 'Start a job with it')));
      datasets = [ds, ...datasets.filter((d) => d.id !== ds.id)];
      render();
    } catch (err) {
      clear(status, problemsBox(err, file.name));
    } finally {
      fileInput.value = '';
    }
  }

  function render() {
    if (!datasets.length) {
      clear(listBox, h('div', { class: 'empty' }, h('p', { class: 'empty-title' }, 'No datasets yet — upload one above.')));
    } else {
      clear(listBox, h('table', { class: 'table' },
        h('thead', null, h('tr', null, ['File', 'Format', 'Examples', 'Size', 'SHA-256', 'Uploaded', ''].map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', null, datasets.map((d) => h('tr', null,
          h('td', { 'data-label': 'File' }, h('a', { href: `#/datasets/${d.id}` }, d.filename), h('div', { class: 'muted mono small' }, d.id)),
          h('td', { 'data-label': 'Format' }, d.format || '—'),
          h('td', { class: 'num', 'data-label': 'Examples' }, fmtInt(d.n_examples)),
          h('td', { class: 'num', 'data-label': 'Size' }, fmtBytes(d.bytes)),
          h('td', { class: 'mono small', 'data-label': 'SHA-256', title: d.sha256 }, `${String(d.sha256 || '').slice(0, 12)}…`),
          h('td', { 'data-label': 'Uploaded' }, timeEl(d.created_at)),
          h('td', null, h('button', { type: 'button', class: 'secondary small danger-outline', 'data-delete': d.id,
            'aria-label': `Delete ${d.filename}`, onclick: () => remove(d) }, 'Delete')))))));
    }
    more.hidden = !hasMore;
  }

  // Asks first: a deleted dataset's file is gone. The server refuses (409) while a job uses it; that says why.
  async function remove(d) {
    if (!confirm(`Delete ${d.filename} (${d.id})? Its file is removed; this cannot be undone.`)) return;
    try {
      await del(`/datasets/${encodeURIComponent(d.id)}`);
      datasets = datasets.filter((x) => x.id !== d.id);
      render();
      toast(`Deleted ${d.filename}.`);
    } catch (err) {
      toast(err.message, 'error');
    }
  }

  async function load(older = false) {
    const page = await get('/datasets', { limit: PAGE, after: older ? datasets[datasets.length - 1]?.id : undefined });
    datasets = older ? [...datasets, ...(page.data || [])] : page.data || [];
    hasMore = page.has_more;
    render();
  }
  await load();
}

export async function datasetView(root, ctx, id) {
  const ds = await get(`/datasets/${encodeURIComponent(id)}`);
  let offset = 0;
  const rowsBox = h('div', { 'aria-live': 'polite' });
  const pager = h('div', { class: 'pager' });
  clear(root,
    h('nav', { class: 'crumbs', 'aria-label': 'Breadcrumb' }, h('a', { href: '#/datasets' }, 'Datasets'), ' / ', h('span', { class: 'mono' }, ds.id)),
    h('div', { class: 'page-head' }, h('div', null, h('h1', null, ds.filename),
      h('p', { class: 'muted' }, `${fmtInt(ds.n_examples)} examples · ${ds.format} format · ${fmtBytes(ds.bytes)} · uploaded `, timeEl(ds.created_at))),
    h('div', { class: 'head-actions' }, h('a', { class: 'button primary', href: '#/new' }, 'New job'))),
    h('section', { class: 'panel' }, rowsBox, pager));

  async function load() {
    clear(rowsBox, h('p', { class: 'loading' }, 'Loading rows…'));
    const page = await get(`/datasets/${ds.id}/rows`, { offset, limit: 10 });
    const rows = page.data || [];
    clear(rowsBox, rows.length ? h('ol', { class: 'rows' }, rows.map((r, i) => h('li', null,
      h('div', { class: 'muted small mono' }, `row #${r.row ?? offset + i}${r.line ? ` · line ${r.line}` : ''}`), renderExample(r))))
      : h('p', { class: 'empty' }, 'No rows.'));
    const hasMore = page.has_more ?? offset + rows.length < ds.n_examples;
    clear(pager,
      h('button', { type: 'button', class: 'secondary', disabled: offset === 0, onclick: () => { offset = Math.max(0, offset - 10); load(); } }, '← Previous'),
      h('span', { class: 'small muted' }, rows.length ? `rows ${offset + 1}–${offset + rows.length} of ${fmtInt(ds.n_examples)}` : ''),
      h('button', { type: 'button', class: 'secondary', disabled: !hasMore, onclick: () => { offset += 10; load(); } }, 'Next →'));
  }
  await load();
}
