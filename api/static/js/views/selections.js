// "What the model trained on": selected and skipped candidates with their scores, and the most / least picked rows.
import { h, clear, fmtNum, fmtInt, isNum } from '../dom.js';
import { get } from '../api.js';
import { showRow } from './rowdialog.js';

const PAGE = 20;
const VIEWS = [
  ['selected', 'Selected', 'Examples the model trained on, with the scores that got them picked; newest step first.'],
  ['skipped', 'Skipped', 'Candidates that were scored but not trained on; newest step first.'],
  ['most', 'Most picked', 'Dataset rows picked most often (across epochs and steps).'],
  ['least', 'Least picked', 'Dataset rows picked least often when they were candidates.'],
];

export function selectionsPanel(container, job, ctx) {
  let view = 'selected';
  // Selections page by cursor (`after` = last id seen); the summaries by offset. `cursors` lets "Previous" go back.
  let offset = 0;
  let cursors = [undefined];
  let loading = false;

  const seg = h('div', { class: 'segmented', role: 'radiogroup', 'aria-label': 'Which examples' });
  const desc = h('p', { class: 'muted small' });
  const table = h('div', { class: 'sel-table', 'aria-live': 'polite' });
  const pager = h('div', { class: 'pager' });
  for (const [name, label] of VIEWS) {
    seg.append(h('button', {
      type: 'button', role: 'radio', 'aria-checked': String(name === view), dataset: { view: name },
      onclick: () => { view = name; offset = 0; cursors = [undefined]; load(); },
    }, label));
  }
  const refreshBtn = h('button', { type: 'button', class: 'secondary', onclick: () => load() }, 'Refresh');
  clear(container, h('section', { class: 'panel' }, h('h2', null, 'What the model trained on'),
    h('div', { class: 'sel-controls' }, seg, refreshBtn), desc, table, pager));

  function scoreCell(v, label) {
    return h('td', { class: 'num', 'data-label': label }, isNum(v) ? fmtNum(v, 4) : '—');
  }

  function rowLink(row) {
    return h('button', { type: 'button', class: 'link mono', title: 'Show the full example', onclick: () => showRow(job.dataset_id, row) }, `#${row}`);
  }

  async function load() {
    if (loading) return;
    loading = true;
    for (const b of seg.querySelectorAll('button')) b.setAttribute('aria-checked', String(b.dataset.view === view));
    desc.textContent = VIEWS.find(([n]) => n === view)[2];
    table.setAttribute('aria-busy', 'true');
    if (!table.firstChild) table.append(h('p', { class: 'loading' }, 'Loading examples…'));
    try {
      let page, rows, body, headRow;
      if (view === 'selected' || view === 'skipped') {
        page = await get(`/jobs/${job.id}/selections`, { selected: view === 'selected', limit: PAGE, after: cursors[cursors.length - 1] });
        rows = page.data || [];
        headRow = ['Step', 'Row', 'Preview', 'Utility', 'Diversity', 'Score'];
        body = rows.map((r) => h('tr', null,
          h('td', { class: 'num', 'data-label': 'Step' }, fmtInt(r.step)),
          h('td', { 'data-label': 'Row' }, rowLink(r.row)),
          h('td', { class: 'preview', 'data-label': 'Preview' }, r.preview || ''),
          scoreCell(r.utility, 'Utility'),
          scoreCell(r.diversity, 'Diversity'),
          scoreCell(r.score, 'Score')));
      } else {
        page = await get(`/jobs/${job.id}/selections/summary`, { order: view, limit: PAGE, offset });
        rows = page.data || [];
        headRow = ['Row', 'Preview', 'Times picked', 'Times a candidate', 'Pick rate'];
        body = rows.map((r) => h('tr', null,
          h('td', { 'data-label': 'Row' }, rowLink(r.row)),
          h('td', { class: 'preview', 'data-label': 'Preview' }, r.preview || ''),
          h('td', { class: 'num', 'data-label': 'Times picked' }, fmtInt(r.times_selected)),
          h('td', { class: 'num', 'data-label': 'Times a candidate' }, fmtInt(r.times_candidate)),
          h('td', { class: 'num', 'data-label': 'Pick rate' }, r.times_candidate ? `${fmtNum((100 * r.times_selected) / r.times_candidate, 3)} %` : '—')));
      }
      if (!rows.length) {
        clear(table, h('p', { class: 'empty' }, offset || cursors.length > 1 ? 'No more rows.'
          : job.status === 'running' || job.status === 'queued' ? 'Nothing recorded yet — rows appear as steps complete.' : 'No rows recorded for this job.'));
      } else {
        clear(table, h('table', { class: `table selections view-${view}`, 'data-view': view },
          h('thead', null, h('tr', null, headRow.map((t) => h('th', { scope: 'col' }, t)))),
          h('tbody', null, body)));
      }
      const hasMore = page.has_more ?? rows.length === PAGE;
      const byCursor = view === 'selected' || view === 'skipped';
      const first = byCursor ? (cursors.length - 1) * PAGE : offset;
      const seen = isNum(page.rows_seen) ? ` · ${fmtInt(page.rows_seen)} distinct rows drawn so far` : '';
      clear(pager,
        h('button', {
          type: 'button', class: 'secondary', disabled: first === 0,
          onclick: () => { if (byCursor) cursors.pop(); else offset = Math.max(0, offset - PAGE); load(); },
        }, '← Previous'),
        h('span', { class: 'small muted' }, rows.length ? `${first + 1}–${first + rows.length}${seen}` : ''),
        h('button', {
          type: 'button', class: 'secondary', disabled: !hasMore,
          onclick: () => { if (byCursor) cursors.push(page.last_id || rows[rows.length - 1].id); else offset += PAGE; load(); },
        }, 'Next →'));
    } catch (err) {
      clear(table, h('p', { class: 'error-text', role: 'alert' }, err.message));
    } finally {
      loading = false;
      table.setAttribute('aria-busy', 'false');
    }
  }

  load();
  return { refresh: load };
}
