// Compare jobs: overlaid loss (and eval) curves against steps, examples trained or compute time, and a table of finals.
import { h, clear, fmtNum, fmtInt, fmtPct, fmtDuration, statusBadge, jobTitle, jobLabel, ACTIVE, METHOD_LABELS, wallSeconds, isNum, timeEl } from '../dom.js';
import { get, listAll } from '../api.js';
import { LineChart, COLORS, alignSeries } from '../charts.js';

const POLL_MS = 2000;
const X_AXES = {
  step: { label: 'step', title: 'Step', fmt: (v) => fmtNum(v, 4) },
  examples: { label: 'examples trained', title: 'Examples trained on (backward passes)', fmt: (v) => fmtInt(v) },
  seconds: { label: 'compute time (s)', title: 'Compute time: scoring + training (s)', fmt: (v) => fmtNum(v, 3), real: true },
};

export async function compareView(root, ctx) {
  const ids = (ctx.params.get('ids') || '').split(',').filter(Boolean);
  let xAxis = X_AXES[ctx.params.get('x')] ? ctx.params.get('x') : 'step';
  let smooth = ctx.params.get('smooth') === '1';
  let stopped = false;
  let timer = null;

  const recent = await listAll('/jobs', {}, 100);
  const runs = new Map(); // id -> {job, rows, lastStep}

  const picker = h('fieldset', { class: 'picker' }, h('legend', null, 'Jobs to compare'));
  const controls = h('div', { class: 'compare-controls' });
  const chartsBox = h('div', { class: 'chart-grid' });
  const tableBox = h('div', { class: 'table-wrap' });
  clear(root,
    h('div', { class: 'page-head' }, h('h1', null, 'Compare jobs')),
    h('section', { class: 'panel' }, picker),
    h('section', { class: 'panel' }, controls, chartsBox),
    h('section', { class: 'panel flush' }, h('h2', { class: 'pad' }, 'Final figures'), tableBox));

  function setUrl() {
    const p = new URLSearchParams();
    if (ids.length) p.set('ids', ids.join(','));
    if (xAxis !== 'step') p.set('x', xAxis);
    if (smooth) p.set('smooth', '1');
    history.replaceState(null, '', `#/compare?${p}`);
  }

  // Jobs named in the URL but older than the recent list still get a checkbox.
  for (const id of ids) {
    if (!recent.some((j) => j.id === id)) {
      try { recent.push(await get(`/jobs/${encodeURIComponent(id)}`)); } catch { /* gone: ignore */ }
    }
  }

  function renderPicker() {
    clear(picker, h('legend', null, 'Jobs to compare'));
    if (!recent.length) {
      picker.append(h('p', { class: 'empty' }, 'No jobs yet — ', h('a', { href: '#/new' }, 'start one'), '.'));
      return;
    }
    const first = recent.find((j) => j.id === ids[0]);
    picker.append(h('p', { class: 'hint' }, 'Tick two or more jobs. ', first ? `Jobs on the same dataset as ${jobTitle(first)} are listed first.` : 'Compare jobs on the same dataset, e.g. uds against random.'));
    const ordered = recent.slice().sort((a, b) => (first ? (b.dataset_id === first.dataset_id) - (a.dataset_id === first.dataset_id) : 0));
    picker.append(h('ul', { class: 'pick-list' }, ordered.map((j) => {
      const idx = ids.indexOf(j.id);
      return h('li', null, h('label', { class: 'pick' },
        h('input', { type: 'checkbox', value: j.id, checked: idx >= 0, onchange: (e) => toggle(j.id, e.target.checked) }),
        idx >= 0 ? h('span', { class: 'swatch', style: { background: COLORS[idx % COLORS.length] } }) : h('span', { class: 'swatch none' }),
        h('span', { class: 'pick-name' }, jobTitle(j)), ' ',
        h('span', { class: 'muted small' }, `${j.method} · ${fmtPct(j.budget, 1)} · ${j.model}`), ' ', statusBadge(j.status)));
    })));
  }

  async function toggle(id, on) {
    if (on && !ids.includes(id)) ids.push(id);
    if (!on) ids.splice(ids.indexOf(id), 1);
    setUrl();
    renderPicker();
    await refresh();
  }

  clear(controls,
    h('label', { class: 'inline', for: 'x-axis' }, 'X axis ',
      h('select', { id: 'x-axis', onchange: (e) => { xAxis = e.target.value; setUrl(); rebuild(); } },
        Object.entries(X_AXES).map(([k, v]) => h('option', { value: k, selected: k === xAxis }, v.title)))),
    h('label', { class: 'inline' }, h('input', { type: 'checkbox', id: 'smooth', checked: smooth, onchange: (e) => { smooth = e.target.checked; setUrl(); draw(); } }), ' Smooth curves (EMA 0.8)'));

  let charts = [];
  let evalNote = null;
  function rebuild() {
    for (const c of charts) c.destroy();
    const axis = X_AXES[xAxis];
    const series = ids.map((id, i) => ({ label: runs.get(id) ? jobLabel(runs.get(id).job) : id, color: COLORS[i % COLORS.length] }));
    const pointSeries = series.map((s) => ({ ...s, points: true }));
    charts = [
      new LineChart({ id: 'cmp-loss', title: 'Training loss', unit: 'nats per token', series, xLabel: axis.label, xFormat: axis.fmt, xInteger: !axis.real, height: 260 }),
      new LineChart({ id: 'cmp-eval-loss', title: 'Eval loss', unit: 'nats per token', series: pointSeries, xLabel: axis.label, xFormat: axis.fmt, xInteger: !axis.real, empty: 'No eval metrics: give a job an eval dataset.' }),
      new LineChart({ id: 'cmp-eval-acc', title: 'Eval accuracy', unit: '% exact match', series: pointSeries, xLabel: axis.label, xFormat: axis.fmt, xInteger: !axis.real, yFormat: (v) => `${fmtNum(v, 3)} %`, empty: 'No eval metrics: give a job an eval dataset.' }),
    ];
    evalNote = h('p', { class: 'muted small eval-note' }, 'No eval metrics in these jobs: give a job an eval dataset to compare eval loss and exact-match accuracy.');
    clear(chartsBox, charts.map((c) => c.el), evalNote);
    draw();
  }

  function ema(ys) {
    if (!smooth) return ys;
    let acc = null;
    return ys.map((y) => { if (y === null) return null; acc = acc === null ? y : 0.8 * acc + 0.2 * y; return acc; });
  }

  function xsOf(rows) {
    let ex = 0, t = 0;
    return rows.map((r) => {
      ex += r.selected || 0;
      t += (r.time_scoring || 0) + (r.time_training || 0);
      return xAxis === 'step' ? r.step : xAxis === 'examples' ? ex : +t.toFixed(3);
    });
  }

  function draw() {
    if (!charts.length) return;
    if (ids.length === 0) {
      for (const c of charts) { c.setEmptyText('Tick jobs above to overlay their curves.'); c.setData([[]]); }
      renderTable();
      return;
    }
    const tables = (key, scale = 1) => ids.map((id) => {
      const rows = runs.get(id)?.rows || [];
      const xs = xsOf(rows);
      const keep = rows.map((r, i) => [xs[i], r[key]]).filter(([, y]) => isNum(y));
      return [keep.map(([x]) => x), key === 'loss' ? ema(keep.map(([, y]) => y * scale)) : keep.map(([, y]) => y * scale)];
    });
    charts[0].setData(alignSeries(tables('loss')));
    charts[1].setData(alignSeries(tables('eval_loss')));
    charts[2].setData(alignSeries(tables('eval_accuracy', 100)));
    // Eval charts only when some job has eval metrics; otherwise one line says how to get them.
    const hasEval = charts[1].el.dataset.points !== '0' || charts[2].el.dataset.points !== '0';
    charts[1].el.hidden = charts[2].el.hidden = !hasEval;
    if (evalNote) evalNote.hidden = hasEval;
    renderTable();
  }

  function last(rows, key) {
    for (let i = rows.length - 1; i >= 0; i--) if (isNum(rows[i][key])) return rows[i][key];
    return null;
  }

  function renderTable() {
    if (!ids.length) { clear(tableBox, h('p', { class: 'empty pad' }, 'Nothing selected.')); return; }
    const cols = ['Job', 'Method', 'Budget', 'Status', 'Steps', 'Final loss', 'Best loss', 'Eval loss', 'Eval accuracy', 'Examples trained', 'Tokens trained', 'Backward passes saved', 'Wall time', 'Scoring time', 'Training time'];
    clear(tableBox, h('table', { class: 'table compare-table', id: 'compare-table' },
      h('thead', null, h('tr', null, cols.map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', null, ids.map((id, i) => {
        const run = runs.get(id);
        if (!run) return h('tr', null, h('td', { colspan: String(cols.length) }, `Loading ${id}…`));
        const { job, rows } = run;
        const losses = rows.map((r) => r.loss).filter(isNum);
        const scoring = rows.reduce((a, r) => a + (r.time_scoring || 0), 0);
        const training = rows.reduce((a, r) => a + (r.time_training || 0), 0);
        const evalAcc = last(rows, 'eval_accuracy');
        return h('tr', { 'data-job-id': id },
          h('td', { 'data-label': 'Job' }, h('span', { class: 'swatch', style: { background: COLORS[i % COLORS.length] } }), ' ', h('a', { href: `#/jobs/${id}` }, jobTitle(job))),
          h('td', { 'data-label': 'Method' }, METHOD_LABELS[job.method] || job.method),
          h('td', { class: 'num', 'data-label': 'Budget' }, fmtPct(job.budget, 1)),
          h('td', { 'data-label': 'Status' }, statusBadge(job.status)),
          h('td', { class: 'num', 'data-label': 'Steps' }, `${fmtInt(rows.length ? rows[rows.length - 1].step : 0)} / ${fmtInt(job.progress?.total_steps)}`),
          h('td', { class: 'num', 'data-label': 'Final loss' }, fmtNum(last(rows, 'loss') ?? job.latest_loss, 4)),
          h('td', { class: 'num', 'data-label': 'Best loss' }, losses.length ? fmtNum(Math.min(...losses), 4) : '—'),
          h('td', { class: 'num', 'data-label': 'Eval loss' }, fmtNum(last(rows, 'eval_loss'), 4)),
          h('td', { class: 'num', 'data-label': 'Eval accuracy' }, isNum(evalAcc) ? fmtPct(evalAcc) : '—'),
          h('td', { class: 'num', 'data-label': 'Examples trained' }, fmtInt(job.examples_trained)),
          h('td', { class: 'num', 'data-label': 'Tokens trained' }, fmtInt(job.tokens_trained)),
          h('td', { class: 'num', 'data-label': 'Backward passes saved' }, fmtPct(job.backward_saved_fraction)),
          h('td', { class: 'num', 'data-label': 'Wall time' }, fmtDuration(wallSeconds(job))),
          h('td', { class: 'num', 'data-label': 'Scoring time' }, fmtDuration(scoring)),
          h('td', { class: 'num', 'data-label': 'Training time' }, fmtDuration(training)));
      }))));
  }

  async function fetchRun(id) {
    let run = runs.get(id);
    if (!run) { run = { job: null, rows: [], lastStep: null }; }
    run.job = await get(`/jobs/${encodeURIComponent(id)}`);
    for (let guard = 0; guard < 50; guard++) {
      const page = await get(`/jobs/${encodeURIComponent(id)}/metrics`, { after_step: run.lastStep ?? undefined, limit: 1000 });
      const rows = (page.data || []).filter((r) => run.lastStep === null || r.step > run.lastStep);
      run.rows.push(...rows);
      if (rows.length) run.lastStep = rows[rows.length - 1].step;
      if (!page.has_more || !rows.length) break;
    }
    runs.set(id, run);
  }

  async function refresh() {
    const before = ids.map((id) => runs.get(id)?.job?.name).join('|');
    await Promise.all(ids.filter((id) => !runs.has(id) || ACTIVE.has(runs.get(id).job?.status)).map((id) => fetchRun(id).catch((err) => console.warn(err))));
    if (stopped) return;
    if (before !== ids.map((id) => runs.get(id)?.job?.name).join('|') || charts.length === 0 || charts[0].series.length !== ids.length) rebuild();
    else draw();
  }

  async function poll() {
    if (stopped) return;
    if (!document.hidden && ids.some((id) => ACTIVE.has(runs.get(id)?.job?.status))) {
      try { await refresh(); } catch (err) { console.warn(err); }
    }
    if (!stopped) timer = setTimeout(poll, POLL_MS);
  }

  renderPicker();
  await refresh();
  timer = setTimeout(poll, POLL_MS);
  return () => { stopped = true; clearTimeout(timer); for (const c of charts) c.destroy(); };
}
