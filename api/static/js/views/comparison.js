// One comparison: its runs as a grid (method x budget by seed, each cell a job), and its report: the verdict in
// plain words first, then mean ± sd per method and budget, the paired differences with their intervals, the label
// shares and the notes. Polls while runs are unfinished; GET /comparisons/{id} and /comparisons/{id}/report.
import { h, clear, toast, fmtNum, fmtInt, fmtPct, fmtDuration, timeEl, statusBadge, METHOD_LABELS, SELECTORS, isNum } from '../dom.js';
import { get, post, del, download, url, getKey } from '../api.js';
import { COLORS } from '../charts.js';
import { pct, methodShort, runsProgress, UNFINISHED } from './comparisons.js';

const POLL_MS = 2000;
const SVG = 'http://www.w3.org/2000/svg';
const CELL_TEXT = { queued: '·', validating_files: '·', running: '…', cancelling: '…', failed: '✕', cancelled: '–' };
const VERDICT_TEXT = { better: 'better', worse: 'worse', indistinguishable: 'no clear difference' };

export async function comparisonView(root, ctx, id) {
  let c = await get(`/comparisons/${encodeURIComponent(id)}`);
  let report = null;
  let reportError = null;
  let stopped = false;
  let timer = null;
  let confirmingCancel = false;
  const datasets = {};

  const head = h('div', { class: 'comparison-head' });
  const gridBox = h('section', { class: 'panel', id: 'runs-panel', 'aria-labelledby': 'runs-title' });
  // The answer first (the verdict), then the runs, then the report's tables.
  const verdictBox = h('div', { id: 'verdict-box' });
  const reportBox = h('section', { class: 'report', id: 'report', 'aria-live': 'off' });
  clear(root, head, verdictBox, gridBox, reportBox);

  // ---- head: status, counts, actions ----
  function renderHead() {
    const actions = h('div', { class: 'head-actions' });
    const unfinished = UNFINISHED.has(c.status) || (c.counts?.queued || 0) + (c.counts?.running || 0) > 0;
    if (unfinished) {
      if (confirmingCancel) {
        actions.append(
          h('span', { class: 'confirm-text' }, 'Stop every unfinished run? Finished runs and their results are kept.'),
          h('button', { type: 'button', class: 'danger', id: 'confirm-cancel', onclick: cancel }, 'Yes, cancel the comparison'),
          h('button', { type: 'button', class: 'secondary', onclick: () => { confirmingCancel = false; renderHead(); } }, 'Keep running'));
      } else {
        actions.append(h('button', { type: 'button', class: 'danger-outline', id: 'cancel-comparison', onclick: () => { confirmingCancel = true; renderHead(); } }, 'Cancel'));
      }
    } else {
      actions.append(h('button', { type: 'button', class: 'danger-outline', id: 'delete-comparison', onclick: remove }, 'Delete'));
    }
    const dsLink = (dsId) => h('a', { href: `#/datasets/${dsId}` }, datasets[dsId]?.filename || dsId);
    const n = c.counts || {};
    clear(head,
      h('nav', { class: 'crumbs', 'aria-label': 'Breadcrumb' }, h('a', { href: '#/comparisons' }, 'Compare methods'), ' / ', h('span', { class: 'mono' }, c.id)),
      h('div', { class: 'page-head' },
        h('div', null,
          h('h1', null, c.name || c.id, ' ', statusBadge(c.status)),
          h('p', { class: 'muted' }, `${c.model} · trained on `, dsLink(c.dataset_id), ' · judged on ', dsLink(c.eval_dataset_id)),
          h('p', { class: 'muted' },
            `${(c.methods || []).map(methodShort).join(', ')} at ${(c.budgets || []).map(pct).join(', ')}`,
            c.include_full ? ', and full data' : '', ` · ${c.seeds} seeds`,
            c.label_field ? [' · labels from ', h('code', null, c.label_field)] : null),
          h('ul', { class: 'counts', id: 'comparison-counts', 'aria-label': 'Runs by status' },
            h('li', { 'data-count': 'total' }, h('strong', null, fmtInt(n.total)), ' runs'),
            ['succeeded', 'running', 'queued', 'failed', 'cancelled'].filter((s) => n[s]).map((s) =>
              h('li', { 'data-count': s }, statusBadge(s), ' ', fmtInt(n[s])))),
          h('div', { class: 'head-progress' }, runsProgress(c)),
          c.finished_at ? h('p', { class: 'muted small' }, 'Finished ', timeEl(c.finished_at), ' · started ', timeEl(c.created_at)) : h('p', { class: 'muted small' }, 'Created ', timeEl(c.created_at))),
        actions));
  }

  async function cancel() {
    try {
      c = await post(`/comparisons/${c.id}/cancel`, {});
      confirmingCancel = false;
      toast('Cancellation requested: unfinished runs stop at their next step.');
      renderAll();
      schedule(0);
    } catch (err) {
      toast(err.message, 'error');
    }
  }

  // Asks first, as deleting a job does: the comparison's jobs go with it.
  async function remove() {
    const total = c.counts?.total ?? (c.runs || []).length;
    if (!confirm(`Delete ${c.name || c.id} (${c.id}) and its ${total} jobs? Their metrics, selections, checkpoints and adapters are removed; this cannot be undone.`)) return;
    try {
      await del(`/comparisons/${encodeURIComponent(c.id)}`);
      toast(`Deleted ${c.name || c.id}.`);
      ctx.navigate('#/comparisons');
    } catch (err) {
      toast(err.message, 'error');
    }
  }

  // ---- the grid: a row per method and budget, a column per seed ----
  function rowKeys() {
    const keys = new Map();
    for (const r of c.runs || []) keys.set(`${r.method}|${r.budget}`, [r.method, r.budget]);
    const order = (m) => (m === 'full' ? -1 : SELECTORS.indexOf(m) < 0 ? 99 : SELECTORS.indexOf(m));
    return [...keys.values()].sort((a, b) => (a[0] === 'full') !== (b[0] === 'full') ? (a[0] === 'full' ? -1 : 1)
      : a[1] - b[1] || order(a[0]) - order(b[0]));
  }

  function cell(run, method, budget, seed) {
    if (!run) return h('td', { class: 'run-empty' }, h('span', { class: 'sr-only' }, 'no run'));
    const what = `${methodShort(method)} ${method === 'full' ? '' : `${pct(budget)} `}seed ${seed}`;
    const result = run.status === 'succeeded' && isNum(run.eval_loss) ? `, held-out loss ${fmtNum(run.eval_loss, 4)}` : '';
    const label = `${what}: ${run.status.replace(/_/g, ' ')}${result}`;
    return h('td', null, h('a', {
      class: `run-cell status-${run.status}`, href: `#/jobs/${run.job_id}`, 'data-job-id': run.job_id, 'data-status': run.status,
      'aria-label': label, title: `${label}${isNum(run.seconds) ? ` · ${fmtDuration(run.seconds)}` : ''}`,
    }, run.status === 'succeeded' ? (isNum(run.eval_loss) ? fmtNum(run.eval_loss, 3) : '✓') : (CELL_TEXT[run.status] || '?')));
  }

  function renderGrid() {
    const seeds = Array.from({ length: c.seeds || 0 }, (_, i) => i);
    const bySlot = new Map((c.runs || []).map((r) => [`${r.method}|${r.budget}|${r.seed}`, r]));
    clear(gridBox,
      h('h2', { id: 'runs-title' }, 'Runs'),
      h('p', { class: 'hint' }, 'One cell per job: a row per method and budget, a column per seed (runs of one seed are paired). A finished cell shows its held-out loss; open a cell for the job\'s charts.'),
      h('div', { class: 'table-wrap' }, h('table', { class: 'run-grid', id: 'runs-grid' },
        h('thead', null, h('tr', null, h('th', { scope: 'col' }, 'Method · budget'), seeds.map((s) => h('th', { scope: 'col' }, `seed ${s}`)))),
        h('tbody', null, rowKeys().map(([method, budget]) => h('tr', { 'data-method': method, 'data-budget': String(budget) },
          h('th', { scope: 'row', title: METHOD_LABELS[method] || method }, methodShort(method), method === 'full' ? null : h('span', { class: 'muted' }, ` ${pct(budget)}`)),
          seeds.map((s) => cell(bySlot.get(`${method}|${budget}|${s}`), method, budget, s))))))),
      h('ul', { class: 'grid-legend small muted', 'aria-hidden': 'true' },
        [['succeeded', 'done (held-out loss)'], ['running', 'running'], ['queued', 'queued'], ['failed', 'failed'], ['cancelled', 'cancelled']]
          .map(([s, text]) => h('li', null, h('span', { class: `run-cell mini status-${s}` }, s === 'succeeded' ? '' : CELL_TEXT[s]), ' ', text))));
  }

  // ---- the report ----
  function metricOf(key) {
    return (report?.metrics || []).find((m) => m.key === key) || { key, name: key, lower_is_better: true, scale: 1, unit: '' };
  }

  // A level (a mean, or with digits 2 an sd): percentages for fractions (scale 100), else significant digits.
  function level(m, v, digits = 4) {
    if (!isNum(v)) return '—';
    return m.scale === 100 ? `${(v * 100).toFixed(1)} %` : fmtNum(v * (m.scale || 1), digits);
  }

  // A difference: percentage points for fractions, else signed, with the metric's unit.
  function delta(m, v) {
    if (!isNum(v)) return '—';
    const x = v * (m.scale || 1);
    const unit = m.unit && m.unit.trim() ? ` ${m.unit.trim()}` : '';
    const body = m.scale === 100 ? Math.abs(x).toFixed(1) : fmtNum(Math.abs(x), 3);
    if (Number(body) === 0) return `0${m.scale === 100 ? '.0' : ''}${unit}`;
    return `${x > 0 ? '+' : '−'}${body}${unit}`;
  }

  // "mean ± sd"; one run has no spread to show (the server sends sd 0 then).
  function meanSd(m, stat, n, fmt = (v, digits) => level(m, v, digits)) {
    if (!stat || !isNum(stat.mean)) return '—';
    return isNum(stat.sd) && n > 1 ? `${fmt(stat.mean, 4)} ± ${fmt(stat.sd, 2)}` : fmt(stat.mean, 4);
  }

  function rowName(method, budget) {
    return method === 'full' ? 'full data' : `${methodShort(method)} ${pct(budget)}`;
  }

  // The answer to "does selection pay on my data?" from the primary metric's paired differences: the cheapest
  // method and budget that was not worse than full data, and how the selectors fared against random.
  function summary() {
    const key = report.primary_metric || 'eval_loss';
    const m = metricOf(key);
    const diffs = (report.differences || []).filter((d) => d.metric === key);
    if (!diffs.length) return null;
    const timeOf = (d) => (report.rows || []).find((r) => r.method === d.method && r.budget === d.budget)?.time_vs_full;
    const parts = [];
    const vsFull = diffs.filter((d) => d.reference === 'full');
    if (vsFull.length) {
      const fine = vsFull.filter((d) => d.verdict !== 'worse')
        .sort((a, b) => (timeOf(a) ?? Infinity) - (timeOf(b) ?? Infinity) || (a.verdict === 'better' ? -1 : 1));
      if (fine.length) {
        // Only an interval wholly below zero says selection pays; one that crosses zero says "not shown yet",
        // whatever the mean: with few seeds it is often wide enough to hide a real loss.
        const d = fine[0];
        const t = timeOf(d);
        const time = isNum(t) ? `, in ${fmtPct(t, 0)} of full data's time` : '';
        const seeds = ` (${d.n} paired seed${d.n === 1 ? '' : 's'})`;
        if (d.verdict === 'better') {
          parts.push(h('span', { class: 'verdict-better-text' }, 'Selection pays here: '),
            `${rowName(d.method, d.budget)} was better than full data on ${m.name}${time}${seeds}.`);
        } else {
          const range = isNum(d.low) && isNum(d.high) ? `, 95 % interval ${delta(m, d.low)} to ${delta(m, d.high)}` : '';
          parts.push(h('span', { class: 'verdict-neutral-text' }, 'Not shown either way yet: '),
            `${rowName(d.method, d.budget)} was not distinguishable from full data on ${m.name}${range}${time}${seeds}; `,
            'more seeds narrow the interval.');
        }
      } else {
        parts.push(h('span', { class: 'verdict-worse-text' }, 'Selection does not pay here: '),
          `every method at every budget had a worse ${m.name} than full data.`);
      }
    }
    const vsRandom = diffs.filter((d) => d.reference === 'random');
    if (vsRandom.length) {
      const said = vsRandom.map((d) => `${methodShort(d.method)} ${VERDICT_TEXT[d.verdict] || d.verdict} at ${pct(d.budget)}`);
      parts.push(` Against random picks at the same budget: ${said.join('; ')}.`);
    }
    return parts.length ? parts : null;
  }

  function verdictOf(sentence) {
    return (report.differences || []).find((d) => d.sentence === sentence)?.verdict || null;
  }

  function renderVerdicts() {
    const sentences = report.sentences || [];
    const said = summary();
    return h('section', { class: 'panel verdict-panel', id: 'verdict', 'aria-labelledby': 'verdict-title' },
      h('h2', { id: 'verdict-title' }, 'Does selection pay on this data?'),
      report.complete ? null : h('p', { class: 'partial', id: 'report-partial' },
        `Partial: ${fmtInt(report.runs_done)} of ${fmtInt(report.runs_total)} runs done. The answer can change as runs finish.`),
      said ? h('p', { class: 'verdict-summary', id: 'verdict-summary' }, said) : null,
      sentences.length
        ? h('ul', { class: 'verdicts', id: 'verdicts' }, sentences.map((s) => h('li', { class: `verdict-${verdictOf(s) || 'none'}` }, s)))
        : h('p', { class: 'muted', id: 'verdicts-empty' }, 'No verdict yet: it needs runs of a method and of its reference that finished on the same seed.'));
  }

  function renderMeans() {
    const metrics = report.metrics || [];
    const cols = ['Method', 'Budget', 'Runs', ...metrics.map((m) => m.name), 'Time', 'Time vs full', 'Scoring share'];
    return h('section', { class: 'panel flush', 'aria-labelledby': 'means-title' },
      h('h2', { class: 'pad', id: 'means-title' }, 'Mean ± sd over seeds'),
      h('p', { class: 'hint pad-x' }, metrics.map((m) => `${m.name}: ${m.lower_is_better ? 'lower' : 'higher'} is better`).join(' · '),
        ' · time: scoring + training, per run'),
      h('div', { class: 'table-wrap' }, h('table', { class: 'table report-table', id: 'report-table' },
        h('thead', null, h('tr', null, cols.map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', null, (report.rows || []).map((r) => h('tr', { 'data-method': r.method, 'data-budget': String(r.budget) },
          h('td', { 'data-label': 'Method', title: METHOD_LABELS[r.method] || r.method }, h('strong', null, methodShort(r.method))),
          h('td', { 'data-label': 'Budget', class: 'num' }, pct(r.budget)),
          h('td', { 'data-label': 'Runs', class: 'num' }, fmtInt(r.n)),
          metrics.map((m) => h('td', { 'data-label': m.name, class: 'num', 'data-metric': m.key }, meanSd(m, r[m.key], r.n))),
          h('td', { 'data-label': 'Time', class: 'num' }, meanSd(null, r.seconds, r.n, fmtDuration)),
          h('td', { 'data-label': 'Time vs full', class: 'num' }, isNum(r.time_vs_full) ? fmtPct(r.time_vs_full, 0) : '—'),
          h('td', { 'data-label': 'Scoring share', class: 'num' }, isNum(r.scoring_share) ? fmtPct(r.scoring_share, 0) : '—')))))));
  }

  // A whisker from low to high around the mean, with the zero line; one scale per metric so rows compare.
  function intervalPlot(d, extent) {
    const W = 160, H = 22, pad = 8;
    const x = (v) => pad + ((v + extent) / (2 * extent)) * (W - 2 * pad);
    const el = (tag, attrs) => {
      const node = document.createElementNS(SVG, tag);
      for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
      return node;
    };
    const svg = el('svg', { viewBox: `0 0 ${W} ${H}`, width: W, height: H, class: `interval verdict-${d.verdict}`, role: 'img' });
    svg.setAttribute('aria-label', isNum(d.low) ? `interval ${fmtNum(d.low, 3)} to ${fmtNum(d.high, 3)}, mean ${fmtNum(d.mean, 3)}` : `mean ${fmtNum(d.mean, 3)}, one seed: no interval`);
    svg.append(el('line', { x1: x(0), x2: x(0), y1: 1, y2: H - 1, class: 'zero' }));
    if (isNum(d.low) && isNum(d.high)) {
      svg.append(el('line', { x1: x(d.low), x2: x(d.high), y1: H / 2, y2: H / 2, class: 'whisker' }),
        el('line', { x1: x(d.low), x2: x(d.low), y1: H / 2 - 5, y2: H / 2 + 5, class: 'whisker' }),
        el('line', { x1: x(d.high), x2: x(d.high), y1: H / 2 - 5, y2: H / 2 + 5, class: 'whisker' }));
    }
    if (isNum(d.mean)) svg.append(el('circle', { cx: x(d.mean), cy: H / 2, r: 3.5, class: 'mean' }));
    return svg;
  }

  function renderDifferences() {
    const diffs = report.differences || [];
    const extents = {};
    for (const d of diffs) {
      const e = Math.max(...[d.low, d.high, d.mean].filter(isNum).map(Math.abs), 0);
      extents[d.metric] = Math.max(extents[d.metric] || 0, e);
    }
    return h('section', { class: 'panel flush', 'aria-labelledby': 'diffs-title' },
      h('h2', { class: 'pad', id: 'diffs-title' }, 'Paired differences'),
      h('p', { class: 'hint pad-x' }, 'Method minus reference, seed by seed, with the 95 % interval of the mean difference. The plot shows the interval around the mean and a line at zero: an interval that crosses zero is no clear difference.'),
      diffs.length ? h('div', { class: 'table-wrap' }, h('table', { class: 'table differences-table', id: 'differences-table' },
        h('thead', null, h('tr', null, ['Method', 'Against', 'Metric', 'Mean difference', '95 % interval', 'Seeds', 'Verdict', 'Interval plot'].map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', null, diffs.map((d) => {
          const m = metricOf(d.metric);
          return h('tr', { 'data-verdict': d.verdict, 'data-metric': d.metric },
            h('td', { 'data-label': 'Method', class: 'nowrap' }, h('strong', null, rowName(d.method, d.budget))),
            h('td', { 'data-label': 'Against', class: 'nowrap' }, rowName(d.reference, d.reference_budget)),
            h('td', { 'data-label': 'Metric' }, h('span', null, m.name, h('span', { class: 'muted small' }, m.lower_is_better ? ' (lower is better)' : ' (higher is better)'))),
            h('td', { 'data-label': 'Mean difference', class: 'num' }, delta(m, d.mean)),
            h('td', { 'data-label': '95 % interval', class: 'num' }, isNum(d.low) ? `${delta(m, d.low)} to ${delta(m, d.high)}` : 'one seed: none'),
            h('td', { 'data-label': 'Seeds', class: 'num' }, fmtInt(d.n)),
            h('td', { 'data-label': 'Verdict' }, h('span', { class: `badge verdict-${d.verdict}` }, VERDICT_TEXT[d.verdict] || d.verdict)),
            h('td', { 'data-label': 'Interval plot', class: 'plot-cell' }, intervalPlot(d, extents[d.metric] || 1)));
        })))) : h('p', { class: 'muted pad pad-bottom' }, 'None yet: a difference needs a method and its reference finished on the same seed.'));
  }

  function renderLabels() {
    const L = report.labels;
    if (!L) return null;
    const labels = L.labels || [];
    const bar = (shares) => h('div', { class: 'label-bar', 'aria-hidden': 'true' },
      labels.map((l, i) => h('span', { style: { width: `${100 * (shares?.[l] || 0)}%`, background: COLORS[i % COLORS.length] }, title: `${l} ${fmtPct(shares?.[l] || 0)}` })));
    const shareCells = (shares) => labels.map((l) => h('td', { 'data-label': l, class: 'num' }, fmtPct(shares?.[l] ?? null)));
    return h('section', { class: 'panel flush', 'aria-labelledby': 'labels-title' },
      h('h2', { class: 'pad', id: 'labels-title' }, 'What each method picked, by ', h('code', null, L.field)),
      h('p', { class: 'hint pad-x' }, 'The share of each label among the rows a method trained on, next to its share of the training data.'),
      h('ul', { class: 'label-keys small pad-x' }, labels.map((l, i) => h('li', null, h('span', { class: 'swatch', style: { background: COLORS[i % COLORS.length] } }), ' ', l))),
      h('div', { class: 'table-wrap' }, h('table', { class: 'table labels-table', id: 'labels-table' },
        h('thead', null, h('tr', null, ['Method', 'Budget', 'Picked', ...labels, 'Mix'].map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', null,
          h('tr', { class: 'training-row', 'data-method': 'training' },
            h('td', { 'data-label': 'Method' }, h('strong', null, 'training data')), h('td', { 'data-label': 'Budget', class: 'num' }, '—'),
            h('td', { 'data-label': 'Picked', class: 'num' }, '—'), shareCells(L.training), h('td', { 'data-label': 'Mix', class: 'mix-cell' }, bar(L.training))),
          (L.rows || []).map((r) => h('tr', { 'data-method': r.method, 'data-budget': String(r.budget) },
            h('td', { 'data-label': 'Method' }, h('strong', null, methodShort(r.method))),
            h('td', { 'data-label': 'Budget', class: 'num' }, pct(r.budget)),
            h('td', { 'data-label': 'Picked', class: 'num' }, fmtInt(r.picked)),
            shareCells(r.shares), h('td', { 'data-label': 'Mix', class: 'mix-cell' }, bar(r.shares))))))));
  }

  function reportLinks() {
    const path = `/comparisons/${c.id}/report.md`;
    const name = `${c.id}-report.md`;
    // A plain link streams where no key is in use; with a key (required, or signed in where keys are optional)
    // the download goes through fetch with the Authorization header, as the adapter download does.
    const mdLink = h('a', {
      class: 'button secondary', id: 'download-report', href: url(path), download: name,
      onclick: (e) => {
        if (!getKey() && !ctx.info?.auth_required) return;
        e.preventDefault();
        download(path, name).catch((err) => toast(err.message, 'error'));
      },
    }, 'Download report (Markdown)');
    const ids = (c.runs || []).filter((r) => r.status === 'succeeded').map((r) => r.job_id);
    const curves = ids.length
      ? h('a', { class: 'button secondary', id: 'open-curves', href: `#/compare?ids=${ids.join(',')}` }, `Open loss curves (${ids.length} runs)`)
      : h('span', { class: 'muted small', id: 'open-curves-none' }, 'Loss curves: once a run has succeeded.');
    return h('div', { class: 'report-links head-actions' }, mdLink, curves);
  }

  function renderReport() {
    if (!report) {
      clear(verdictBox);
      clear(reportBox, h('section', { class: 'panel' }, h('h2', null, 'Report'),
        reportError ? h('p', { class: 'error-text', id: 'report-error' }, `The report could not be loaded: ${reportError.message}`)
          : h('p', { class: 'loading' }, 'Loading the report…')));
      return;
    }
    reportBox.dataset.complete = String(!!report.complete);
    const notes = report.notes || [];
    clear(verdictBox, renderVerdicts());
    clear(reportBox,
      reportLinks(),
      renderMeans(),
      renderDifferences(),
      renderLabels(),
      notes.length ? h('section', { class: 'panel', 'aria-labelledby': 'notes-title' },
        h('h2', { id: 'notes-title' }, 'Notes'), h('ul', { class: 'notes', id: 'report-notes' }, notes.map((n) => h('li', null, n)))) : null);
  }

  function renderAll() {
    renderHead();
    renderGrid();
    renderReport();
  }

  // ---- polling: the comparison first, then its report (so the report is at least as new as the status) ----
  async function fetchReport() {
    try {
      report = await get(`/comparisons/${c.id}/report`);
      reportError = null;
    } catch (err) {
      reportError = err;
    }
  }

  function schedule(ms) {
    clearTimeout(timer);
    if (!stopped) timer = setTimeout(tick, ms);
  }

  async function tick() {
    // A page left while it was still loading never got its cleanup registered: stop once it is off the document.
    if (stopped || !root.isConnected) return;
    try {
      if (!document.hidden) {
        c = await get(`/comparisons/${c.id}`);
        await fetchReport();
        if (stopped) return;
        renderAll();
      }
    } catch (err) {
      console.warn('comparison refresh failed', err);
    }
    if (!UNFINISHED.has(c.status)) {
      root.dataset.live = 'stopped';
      return;
    }
    root.dataset.live = 'polling';
    schedule(POLL_MS);
  }

  for (const dsId of new Set([c.dataset_id, c.eval_dataset_id])) {
    get(`/datasets/${dsId}`).then((d) => { datasets[dsId] = d; if (!stopped) renderHead(); }).catch(() => {});
  }
  root.dataset.live = UNFINISHED.has(c.status) ? 'polling' : 'stopped';
  renderAll();
  await fetchReport();
  renderReport();
  if (UNFINISHED.has(c.status)) schedule(POLL_MS);

  return () => { stopped = true; clearTimeout(timer); };
}
