// One job: summary, live charts (incremental metrics polling), what it trained on, events, details.
import {
  h, clear, toast, fmtNum, fmtInt, fmtPct, fmtBytes, fmtDuration, timeEl, statusBadge, progressBar,
  jobTitle, ACTIVE, TERMINAL, METHOD_LABELS, wallSeconds, isNum,
} from '../dom.js';
import { get, post, download, url } from '../api.js';
import { LineChart, COLORS } from '../charts.js';
import { selectionsPanel } from './selections.js';
import { etaText, phaseText } from '../phase.js';
import { tryItPanel } from './tryit.js';
import { exportsMenu } from './exports.js';

const POLL_MS = 2000;
const TABS = [['charts', 'Charts'], ['data', 'What it trained on'], ['events', 'Events'], ['details', 'Details'], ['tryit', 'Try it']];

const ERROR_HINTS = {
  out_of_memory: 'Lower micro_batch_size or max_seq_len, or use a smaller candidate_batch_size.',
  dataset_invalid: 'Fix the dataset (see the line numbers) and upload it again.',
  model_load_failed: 'Check that the model is in the server\'s allow-list and present on the worker.',
  artifact_write_failed: 'The worker could not write to its data folder: check free disk space and permissions.',
};

export async function jobView(root, ctx, jobId) {
  let job = await get(`/jobs/${encodeURIComponent(jobId)}`);
  let stopped = false;
  let timer = null;
  let confirmingCancel = false;
  let tab = TABS.some(([t]) => t === ctx.params.get('tab')) ? ctx.params.get('tab') : 'charts';
  let dataset = null;
  let lengthBias = null; // GET /jobs/{id}/length-bias: the job's length diagnostic and the alpha it ran with
  let exportsApi = null; // the export menu, once the job has succeeded

  const head = h('div', { class: 'job-head' });
  const cards = h('div', { class: 'cards', 'aria-live': 'off' });
  const errorSlot = h('div');
  const tabBar = h('div', { class: 'tabs', role: 'tablist', 'aria-label': 'Job views' });
  const panels = {};
  for (const [name, label] of TABS) {
    panels[name] = h('section', { class: 'tab-panel', id: `panel-${name}`, role: 'tabpanel', 'aria-labelledby': `tab-${name}`, hidden: name !== tab });
    tabBar.appendChild(h('button', {
      type: 'button', role: 'tab', id: `tab-${name}`, 'aria-controls': `panel-${name}`, 'aria-selected': String(name === tab),
      tabindex: name === tab ? '0' : '-1',
      dataset: { tab: name }, onclick: () => selectTab(name),
    }, label));
  }

  // Arrow keys move between tabs (the WAI-ARIA tabs pattern); Tab moves into the panel.
  tabBar.addEventListener('keydown', (e) => {
    if (e.key !== 'ArrowRight' && e.key !== 'ArrowLeft') return;
    const names = TABS.map(([t]) => t);
    const next = names[(names.indexOf(tab) + (e.key === 'ArrowRight' ? 1 : names.length - 1)) % names.length];
    selectTab(next);
    tabBar.querySelector(`[data-tab=${next}]`).focus();
  });
  clear(root, head, errorSlot, cards, tabBar, ...Object.values(panels));

  // ---- metrics store (columns, one entry per step) ----
  const m = {
    step: [], loss: [], evalLoss: [], lr: [], tokAcc: [], evalAcc: [], grad: [], alpha: [],
    fracTrained: [], saved: [], tScore: [], tTrain: [],
    rhoUtility: [], rhoScore: [], // the length diagnostic: mean within-group Spearman with token count
    stats: {}, // stats[kind] = {candMean, candMin, candMax, selMean}
  };
  for (const kind of ['utility', 'diversity', 'score']) m.stats[kind] = { candMean: [], candMin: [], candMax: [], selMean: [] };
  let lastStep = null;
  let cumCand = 0, cumSel = 0, sumScore = 0, sumTrain = 0;

  function addMetrics(rows) {
    for (const r of rows) {
      if (lastStep !== null && r.step <= lastStep) continue; // a resumed job may resend a step; keep the first
      lastStep = r.step;
      m.step.push(r.step);
      m.loss.push(r.loss ?? null);
      m.evalLoss.push(r.eval_loss ?? null);
      m.lr.push(r.learning_rate ?? null);
      m.tokAcc.push(isNum(r.token_accuracy) ? r.token_accuracy * 100 : null);
      m.evalAcc.push(isNum(r.eval_accuracy) ? r.eval_accuracy * 100 : null);
      m.grad.push(r.grad_norm ?? null);
      m.alpha.push(r.alpha ?? null);
      cumCand += r.candidates || 0;
      cumSel += r.selected || 0;
      m.fracTrained.push(cumCand ? (100 * cumSel) / cumCand : null);
      m.saved.push(cumCand ? 100 * (1 - cumSel / cumCand) : null);
      m.tScore.push(r.time_scoring ?? null);
      m.tTrain.push(r.time_training ?? null);
      sumScore += r.time_scoring || 0;
      sumTrain += r.time_training || 0;
      m.rhoUtility.push(r.stats?.length?.spearman_utility_length ?? null);
      m.rhoScore.push(r.stats?.length?.spearman_score_length ?? null);
      for (const kind of ['utility', 'diversity', 'score']) {
        const c = r.stats?.candidates?.[kind];
        const s = r.stats?.selected?.[kind];
        const st = m.stats[kind];
        st.candMean.push(c?.mean ?? null);
        st.candMin.push(c?.min ?? null);
        st.candMax.push(c?.max ?? null);
        st.selMean.push(s?.mean ?? null);
      }
    }
  }

  async function fetchLengthBias() {
    lengthBias = await get(`/jobs/${job.id}/length-bias`).catch(() => lengthBias);
  }

  async function fetchMetrics() {
    for (let guard = 0; guard < 50; guard++) {
      const page = await get(`/jobs/${job.id}/metrics`, { after_step: lastStep ?? undefined, limit: 1000 });
      const rows = page.data || [];
      addMetrics(rows);
      if (!page.has_more || !rows.length) break;
    }
  }

  // ---- charts ----
  const band = 'rgba(148, 163, 184, 0.18)';
  const statSeries = [
    { label: 'candidates, mean', color: '#64748b', dash: [5, 4] },
    { label: 'selected, mean', color: COLORS[0] },
    { label: 'candidates, max', color: 'rgba(100,116,139,0.35)', width: 1 },
    { label: 'candidates, min', color: 'rgba(100,116,139,0.35)', width: 1 },
  ];
  const charts = {
    loss: new LineChart({ id: 'loss', title: 'Training loss', unit: 'cross-entropy, nats per token',
      series: [{ label: 'train loss', color: COLORS[0] }, { label: 'eval loss', color: COLORS[1], points: true }] }),
    lr: new LineChart({ id: 'lr', title: 'Learning rate', unit: 'per step', series: [{ label: 'learning rate', color: COLORS[2] }],
      yFormat: (v) => fmtNum(v, 3) }),
    utility: new LineChart({ id: 'utility', title: 'Utility', unit: 'nuclear norm of the logits', series: statSeries, bands: [[3, 4, band]] }),
    diversity: new LineChart({ id: 'diversity', title: 'Diversity', unit: 'mean distance to the memory of selected examples', series: statSeries, bands: [[3, 4, band]] }),
    score: new LineChart({ id: 'score', title: 'Selection score', unit: 'utility + α · diversity (or the method\'s own score)', series: statSeries, bands: [[3, 4, band]] }),
    data: new LineChart({ id: 'data', title: 'Data trained on', unit: '% of candidates, cumulative',
      series: [{ label: 'trained on', color: COLORS[0] }, { label: 'backward passes saved vs full data', color: COLORS[2] }],
      yFormat: (v) => `${fmtNum(v, 3)} %` }),
    time: new LineChart({ id: 'time', title: 'Time per step', unit: 'seconds',
      series: [{ label: 'scoring', color: COLORS[4] }, { label: 'training', color: COLORS[0] }], yFormat: (v) => `${fmtNum(v, 3)} s` }),
    acc: new LineChart({ id: 'acc', title: 'Accuracy', unit: '% of tokens (train) / exact match (eval)',
      series: [{ label: 'train token accuracy', color: COLORS[0] }, { label: 'eval accuracy', color: COLORS[1], points: true }],
      yFormat: (v) => `${fmtNum(v, 3)} %` }),
    grad: new LineChart({ id: 'grad', title: 'Gradient norm', unit: 'L2, before clipping', series: [{ label: 'grad norm', color: COLORS[3] }] }),
    alpha: new LineChart({ id: 'alpha', title: 'α in use', unit: 'weight of diversity in the score', series: [{ label: 'alpha', color: COLORS[5] }] }),
    // Near +1: the step ranked its groups by length, not by usefulness; near 0: length did not decide.
    length: new LineChart({ id: 'length', title: 'Length bias', unit: 'Spearman ρ with token count inside each selection group, mean over the step\'s groups',
      series: [{ label: 'utility vs length', color: COLORS[0] }, { label: 'score vs length', color: COLORS[3], dash: [5, 4] }],
      yFormat: (v) => fmtNum(v, 2) }),
  };
  for (const c of Object.values(charts)) c.setEmptyText('Loading…');
  const timeSplit = h('div', { class: 'split', 'aria-label': 'Time split between scoring and training' });
  charts.time.el.appendChild(timeSplit);
  clear(panels.charts,
    h('p', { class: 'muted small charts-hint' }, 'Charts update every 2 s while the job runs. Drag on a chart to zoom, double-click to reset.'),
    h('div', { class: 'chart-grid' }, Object.values(charts).map((c) => c.el)));

  function updateCharts() {
    const x = m.step;
    charts.loss.setData([x, m.loss, m.evalLoss]);
    charts.lr.setData([x, m.lr]);
    for (const kind of ['utility', 'diversity', 'score']) {
      const st = m.stats[kind];
      charts[kind].setData([x, st.candMean, st.selMean, st.candMax, st.candMin]);
    }
    charts.data.setData([x, m.fracTrained, m.saved]);
    charts.time.setData([x, m.tScore, m.tTrain]);
    charts.acc.setData([x, m.tokAcc, m.evalAcc]);
    charts.grad.setData([x, m.grad]);
    charts.alpha.setData([x, m.alpha]);
    charts.length.setData([x, m.rhoUtility, m.rhoScore]);

    const waiting = ACTIVE.has(job.status) ? 'Waiting for the first step…' : 'No steps were recorded.';
    for (const c of Object.values(charts)) c.setEmptyText(waiting);
    if (job.method !== 'uds') {
      const why = `Not computed by the ${METHOD_LABELS[job.method] || job.method} method.`;
      charts.diversity.setEmptyText(m.step.length ? why : waiting);
      charts.alpha.setEmptyText(m.step.length ? why : waiting);
      charts.length.setEmptyText(m.step.length ? `${why} (it ranks nothing, or nothing that length could bias)` : waiting);
      if (job.method !== 'uds') charts.utility.setEmptyText(m.step.length ? why : waiting);
    }
    const total = sumScore + sumTrain;
    clear(timeSplit);
    if (total > 0) {
      timeSplit.append(
        h('div', { class: 'split-bar' },
          h('span', { class: 'split-scoring', style: { width: `${(100 * sumScore) / total}%` } }),
          h('span', { class: 'split-training', style: { width: `${(100 * sumTrain) / total}%` } })),
        h('p', { class: 'small' },
          h('span', { class: 'key key-scoring' }), `scoring ${fmtDuration(sumScore)} (${fmtPct(sumScore / total, 0)})`, '  ',
          h('span', { class: 'key key-training' }), `training ${fmtDuration(sumTrain)} (${fmtPct(sumTrain / total, 0)})`, ' in total'));
    }
    const lastAlpha = [...m.alpha].reverse().find(isNum);
    charts.alpha.setNote(job.method === 'uds' && job.config?.alpha === 'auto' && isNum(lastAlpha)
      ? `α = "auto": rescaled to the spread of utility over recent steps; now ${fmtNum(lastAlpha, 3)}.` : '');
  }

  // ---- head, cards, error ----
  function renderHead() {
    const actions = h('div', { class: 'head-actions' });
    if (job.cancel_requested && ACTIVE.has(job.status)) {
      actions.append(h('span', { class: 'badge status-cancelling' }, 'cancelling: stops at the next step'));
    } else if (ACTIVE.has(job.status) && job.status !== 'cancelling') {
      if (confirmingCancel) {
        actions.append(
          h('span', { class: 'confirm-text' }, 'Stop this job? Its progress so far is kept.'),
          h('button', { type: 'button', class: 'danger', id: 'confirm-cancel', onclick: cancel }, 'Yes, cancel job'),
          h('button', { type: 'button', class: 'secondary', onclick: () => { confirmingCancel = false; renderHead(); } }, 'Keep running'));
      } else {
        actions.append(h('button', { type: 'button', class: 'danger-outline', id: 'cancel-job', onclick: () => { confirmingCancel = true; renderHead(); } }, 'Cancel job'));
      }
    }
    if (job.adapter) {
      const path = `/jobs/${job.id}/adapter`;
      const name = `${job.id}-adapter.tar.gz`;
      if (ctx.info?.auth_required) {
        actions.append(h('button', {
          type: 'button', class: 'primary', id: 'download-adapter',
          onclick: () => download(path, name).catch((err) => toast(err.message, 'error')),
        }, `Download adapter (${fmtBytes(job.adapter.bytes)})`));
      } else {
        actions.append(h('a', { class: 'button primary', id: 'download-adapter', href: url(path), download: name }, `Download adapter (${fmtBytes(job.adapter.bytes)})`));
      }
    }
    // Built once the job has succeeded and kept across refreshes (it holds its own polling and open state).
    if (job.status === 'succeeded') {
      exportsApi = exportsApi || exportsMenu(job, ctx);
      actions.append(exportsApi.el);
    }
    actions.append(h('a', { class: 'button secondary', href: `#/compare?ids=${job.id}` }, 'Compare…'));
    actions.append(h('a', { class: 'button secondary', href: `#/new?from=${job.id}` }, 'New job like this'));

    clear(head,
      h('nav', { class: 'crumbs', 'aria-label': 'Breadcrumb' }, h('a', { href: '#/' }, 'Jobs'), ' / ', h('span', { class: 'mono' }, job.id)),
      h('div', { class: 'page-head' },
        h('div', null,
          h('h1', null, jobTitle(job), ' ', statusBadge(job.status)),
          h('p', { class: 'muted' },
            `${job.model} · ${METHOD_LABELS[job.method] || job.method} · budget ${fmtPct(job.budget, 1)} · dataset `,
            h('a', { href: `#/datasets/${job.dataset_id}` }, dataset ? dataset.filename : job.dataset_id),
            dataset ? ` (${fmtInt(dataset.n_examples)} examples)` : ''),
          // A run of a method comparison: the way back to its grid and report.
          job.comparison_id ? h('p', { class: 'small', id: 'job-comparison' }, 'One run of the comparison ',
            h('a', { href: `#/comparisons/${encodeURIComponent(job.comparison_id)}` }, job.comparison_id), '.') : null,
          metadataList(job.metadata)),
        actions));
  }

  // The job's metadata (the tags a client sent: team, experiment, ...), each key = value, so a job is findable.
  function metadataList(metadata) {
    const pairs = Object.entries(metadata || {});
    if (!pairs.length) return null;
    return h('ul', { class: 'tags', id: 'job-metadata', 'aria-label': 'Metadata' },
      pairs.map(([k, v]) => h('li', { class: 'tag mono small' }, `${k} = ${typeof v === 'string' ? v : JSON.stringify(v)}`)));
  }

  function card(label, value, sub, id) {
    return h('div', { class: 'card', id: id ? `card-${id}` : null }, h('div', { class: 'card-label' }, label), h('div', { class: 'card-value' }, value), sub ? h('div', { class: 'card-sub' }, sub) : null);
  }

  function renderCards() {
    const p = job.progress || {};
    const wall = wallSeconds(job);
    let eta = '—', etaSub = null;
    if (job.status === 'running') { eta = etaText(job); etaSub = [phaseText(job), `running for ${fmtDuration(wall)}`].filter(Boolean).join(' · '); }
    else if (job.status === 'queued' || job.status === 'validating_files') { eta = 'waiting'; etaSub = 'for a free worker'; }
    else if (TERMINAL.has(job.status)) { eta = fmtDuration(wall); etaSub = 'wall time'; }
    const trainedFrac = job.examples_scored ? job.examples_trained / job.examples_scored : null;
    clear(cards,
      h('div', { class: 'card wide' }, h('div', { class: 'card-label' }, 'Progress'), progressBar(job),
        // With max_steps set the run length is steps, not epochs (it may wrap the data several times).
        h('div', { class: 'card-sub' }, isNum(p.epoch) ? `epoch ${fmtNum(p.epoch, 3)}${job.config?.max_steps ? '' : ` of ${job.config?.epochs ?? '?'}`}` : '',
          job.started_at ? [' · started ', timeEl(job.started_at)] : (TERMINAL.has(job.status) ? ' · never started' : null),
          job.finished_at ? [' · finished ', timeEl(job.finished_at)] : null)),
      card(TERMINAL.has(job.status) ? 'Took' : 'ETA', eta, etaSub, 'eta'),
      card('Latest loss', fmtNum(job.latest_loss, 4), 'nats per token', 'loss'),
      card('Trained on', job.examples_scored || !TERMINAL.has(job.status) ? `${fmtInt(job.examples_trained)} of ${fmtInt(job.examples_scored)}` : '—',
        isNum(trainedFrac) ? `${fmtPct(trainedFrac)} of scored examples` : (TERMINAL.has(job.status) ? 'no step ran' : 'examples'), 'trained'),
      card('Backward passes saved', fmtPct(job.backward_saved_fraction), 'vs full-data training', 'saved'),
      card('Tokens trained', fmtInt(job.tokens_trained), 'tokens with a backward pass', 'tokens'),
      job.method === 'uds' ? card('α used', isNum(job.alpha_used) ? fmtNum(job.alpha_used, 3) : '—', alphaSub(), 'alpha') : null,
      lengthCard(),
      job.adapter ? card('Adapter', fmtBytes(job.adapter.bytes), h('span', { class: 'mono', title: job.adapter.sha256 }, `sha256 ${String(job.adapter.sha256 || '').slice(0, 12)}…`), 'adapter') : null);
  }

  // What the configured alpha means; for "auto", what "paper" would have been (known from the run summary).
  function alphaSub() {
    const mode = job.config?.alpha;
    const paper = lengthBias?.alpha_paper;
    if (mode === 'auto') return `auto: set from the scores${isNum(paper) ? `; "paper" would be ${fmtNum(paper, 3)}` : ''}`;
    if (mode === 'paper') return 'paper: the official 1.5e-3 in this job\'s units';
    return 'fixed in the settings';
  }

  function lengthCard() {
    const b = lengthBias;
    if (!b || !b.steps) return null;
    const rho = isNum(b.spearman_utility_length) ? b.spearman_utility_length : b.spearman_score_length;
    const ratio = b.selected_to_candidates_length;
    let sub = 'no selection: nothing to compare';
    if (isNum(ratio)) {
      const diff = ratio - 1;
      sub = Math.abs(diff) < 0.0005 ? 'selected examples are as long as the candidates'
        : `selected examples are ${fmtPct(Math.abs(diff))} ${diff > 0 ? 'longer' : 'shorter'} than the candidates`;
    }
    const what = isNum(b.spearman_utility_length) ? 'utility' : 'score';
    return card('Length bias', isNum(rho) ? `ρ ${fmtNum(rho, 2)}` : '—',
      [isNum(rho) ? `${what} vs length within groups, over ${fmtInt(b.steps)} steps; ` : '', sub], 'length');
  }

  function renderError() {
    if (!job.error) { clear(errorSlot); return; }
    const e = job.error;
    clear(errorSlot, h('section', { class: 'panel error-box', role: 'alert', id: 'job-error' },
      h('h2', null, job.status === 'failed' ? 'This job failed' : 'Error'),
      h('p', { class: 'error-message' }, e.message || 'No message.'),
      h('p', { class: 'small' }, e.code ? ['code ', h('code', null, e.code)] : null, e.param ? [' · setting ', h('code', null, e.param)] : null),
      ERROR_HINTS[e.code] ? h('p', { class: 'small' }, 'What to try: ', ERROR_HINTS[e.code]) : null));
  }

  async function cancel() {
    try {
      job = await post(`/jobs/${job.id}/cancel`, {});
      confirmingCancel = false;
      toast('Cancellation requested; the job stops at the next step.');
      renderAll();
      schedule(0);
    } catch (err) {
      toast(err.message, 'error');
    }
  }

  // ---- tabs ----
  const rendered = new Set();
  let selectionsApi = null;
  let tryItApi = null;
  function selectTab(name) {
    tab = name;
    for (const btn of tabBar.querySelectorAll('[role=tab]')) {
      btn.setAttribute('aria-selected', String(btn.dataset.tab === name));
      btn.tabIndex = btn.dataset.tab === name ? 0 : -1;
    }
    for (const [n, panel] of Object.entries(panels)) panel.hidden = n !== name;
    const params = new URLSearchParams(ctx.params);
    params.set('tab', name);
    history.replaceState(null, '', `#/jobs/${job.id}?${params}`);
    renderTab();
  }

  function renderTab() {
    if (tab === 'data' && !rendered.has('data')) {
      rendered.add('data');
      selectionsApi = selectionsPanel(panels.data, job, ctx);
    }
    if (tab === 'events') renderEvents();
    if (tab === 'details') renderDetails();
    // Built when first shown, and again once a job that was still running has succeeded.
    if (tab === 'tryit' && (!rendered.has('tryit') || (tryItApi?.status !== 'succeeded' && job.status === 'succeeded'))) {
      rendered.add('tryit');
      tryItApi?.stop();
      tryItApi = Object.assign(tryItPanel(panels.tryit, job), { status: job.status });
    }
  }

  let events = [];
  async function fetchEvents() {
    const page = await get(`/jobs/${job.id}/events`, { limit: 100 });
    events = (page.data || []).slice();
  }

  function renderEvents() {
    if (!events.length) {
      clear(panels.events, h('p', { class: 'empty' }, 'No events yet.'));
      return;
    }
    const sorted = events.slice().sort((a, b) => String(b.created_at).localeCompare(String(a.created_at)) || 0);
    clear(panels.events, h('ol', { class: 'events', reversed: true },
      sorted.map((e) => h('li', { class: `event level-${e.level || 'info'}` },
        timeEl(e.created_at), ' ',
        h('span', { class: `badge level-${e.level || 'info'}` }, e.level || 'info'), ' ',
        e.type ? h('span', { class: 'mono small muted' }, e.type) : null, ' ',
        h('span', { class: 'event-message' }, e.message)))));
  }

  let checkpoints = null;
  async function renderDetails() {
    const cfg = job.config || {};
    const rows = Object.entries(cfg).filter(([k]) => !/_path$|^output_dir$|^models_dir$/.test(k))
      .map(([k, v]) => h('tr', null, h('th', { scope: 'row' }, k), h('td', { class: 'mono' }, Array.isArray(v) ? v.join(', ') : v === null ? '—' : String(v))));
    clear(panels.details,
      h('div', { class: 'two-col' },
        h('section', { class: 'panel' }, h('h2', null, 'Settings'), h('table', { class: 'table kv' }, h('tbody', null, rows))),
        h('section', { class: 'panel' },
          h('h2', null, 'Timeline'),
          h('table', { class: 'table kv' }, h('tbody', null,
            h('tr', null, h('th', null, 'Created'), h('td', null, timeEl(job.created_at))),
            h('tr', null, h('th', null, 'Started'), h('td', null, timeEl(job.started_at))),
            h('tr', null, h('th', null, 'Finished'), h('td', null, timeEl(job.finished_at))),
            h('tr', null, h('th', null, 'Wall time'), h('td', null, fmtDuration(wallSeconds(job)))),
            h('tr', null, h('th', null, 'Dataset'), h('td', null, h('a', { href: `#/datasets/${job.dataset_id}` }, job.dataset_id))),
            job.eval_dataset_id ? h('tr', null, h('th', null, 'Eval dataset'), h('td', null, h('a', { href: `#/datasets/${job.eval_dataset_id}` }, job.eval_dataset_id))) : null)),
          h('h2', null, 'Checkpoints'),
          checkpoints === null ? h('p', { class: 'loading' }, 'Loading checkpoints…')
            : checkpoints.length === 0 ? h('p', { class: 'muted' }, 'No checkpoints yet.')
              : h('table', { class: 'table', id: 'checkpoints-table' }, h('thead', null, h('tr', null, h('th', null, 'Step'), h('th', null, 'Saved'), h('th', null, 'On disk'), h('th', null, 'ID'))),
                h('tbody', null, checkpoints.map((c) => h('tr', null,
                  h('td', { class: 'num', 'data-label': 'Step' }, fmtInt(c.step)),
                  h('td', { 'data-label': 'Saved' }, timeEl(c.created_at)),
                  h('td', { 'data-label': 'On disk' }, c.available === false ? 'pruned (keep_checkpoints)' : 'yes'),
                  h('td', { class: 'mono small', 'data-label': 'ID' }, c.id || '—'))))))));
    if (checkpoints === null) {
      try {
        const page = await get(`/jobs/${job.id}/checkpoints`, { limit: 100 });
        checkpoints = page.data || [];
      } catch (err) {
        checkpoints = [];
        console.warn(err);
      }
      if (tab === 'details') renderDetails();
    }
  }

  function renderAll() {
    renderHead();
    renderError();
    renderCards();
  }

  // ---- polling ----
  function schedule(ms) {
    clearTimeout(timer);
    if (!stopped) timer = setTimeout(tick, ms);
  }

  async function tick() {
    if (stopped) return;
    try {
      if (!document.hidden) {
        job = await get(`/jobs/${job.id}`);
        await fetchMetrics();
        await fetchEvents();
        await fetchLengthBias();
        if (stopped) return;
        renderAll();
        updateCharts();
        if (tab === 'events') renderEvents();
        if (tab === 'details' && TERMINAL.has(job.status)) { checkpoints = null; renderDetails(); }
        if (selectionsApi && TERMINAL.has(job.status)) selectionsApi.refresh();
      }
    } catch (err) {
      console.warn('job refresh failed', err);
    }
    // Stop once the job is finished and one more pass has read its last metrics.
    if (TERMINAL.has(job.status)) {
      root.dataset.live = 'stopped';
      return;
    }
    root.dataset.live = 'polling';
    schedule(POLL_MS);
  }

  get(`/datasets/${job.dataset_id}`).then((d) => { dataset = d; renderHead(); }).catch(() => {});
  renderAll();
  await fetchMetrics();
  await fetchEvents().catch(() => {});
  await fetchLengthBias();
  renderCards();
  updateCharts();
  renderTab();
  root.dataset.live = TERMINAL.has(job.status) ? 'stopped' : 'polling';
  if (!TERMINAL.has(job.status)) schedule(POLL_MS);

  return () => {
    stopped = true;
    clearTimeout(timer);
    tryItApi?.stop();
    exportsApi?.stop();
    for (const c of Object.values(charts)) c.destroy();
  };
}
