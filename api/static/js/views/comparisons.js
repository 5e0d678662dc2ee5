// Compare methods: the tenant's comparisons (each a group of ordinary jobs: every chosen method at every chosen
// budget, plus full data, once per seed, judged on one held-out dataset) and the form that starts one.
// POST/GET /api/v1/comparisons; the contract is notes/comparisons-contract.md.
import { h, clear, toast, fmtInt, fmtDuration, timeEl, statusBadge, METHOD_LABELS, METHOD_SHORT, SELECTORS, isNum } from '../dom.js';
import { get, post, listAll, ApiError } from '../api.js';
import { schemaDefaults } from './newjob.js';
import { debounced, fetchEstimate, memoryText } from '../estimate.js';

const PAGE = 25;
const POLL_MS = 2000;
export const UNFINISHED = new Set(['queued', 'running']);
const DEFAULT_BUDGETS = [0.125, 0.25];
const DEFAULT_SEEDS = 3;  // 3 x (4 x 2 + 1) = 27 jobs: within the default cap of 32 unfinished jobs
const MAX_BUDGETS = 4;

// The shared training settings the form asks for by name; anything else goes in the JSON box. Defaults mirror
// uds/config.py; the server's OpenAPI schema (POST /api/v1/jobs) overrides them and gives the help texts.
const SHARED = [
  { name: 'epochs', label: 'Epochs', unit: 'passes', type: 'int', def: 1, min: 1 },
  { name: 'learning_rate', label: 'Learning rate', type: 'float', def: 1.5e-4, min: 0 },
  { name: 'max_seq_len', label: 'Max sequence length', unit: 'tokens', type: 'int', def: 512, min: 1 },
];

// 0.125 -> "12.5 %"
export function pct(budget) {
  return isNum(budget) ? `${+(budget * 100).toFixed(3)} %` : '—';
}

export function methodShort(method) {
  return METHOD_SHORT[method] || method;
}

// "12.5%, 25 %; 50" -> {values: [0.125, 0.25, 0.5]} or {error}. Percentages; the % sign is optional.
export function parseBudgets(text) {
  const parts = String(text).split(/[,;\s]+/).map((p) => p.trim()).filter((p) => p && p !== '%');
  if (!parts.length) return { error: 'Give at least one budget, e.g. 12.5%.' };
  const values = [];
  for (const part of parts) {
    const m = /^(\d+(?:\.\d+)?|\.\d+)\s*%?$/.exec(part);
    const p = m ? Number(m[1]) : NaN;
    if (!(p > 0 && p < 100)) return { error: `"${part}" is not a percentage above 0 and below 100.` };
    const b = +(p / 100).toFixed(6);
    if (values.includes(b)) return { error: `${part} is listed twice.` };
    values.push(b);
  }
  if (values.length > MAX_BUDGETS) return { error: `At most ${MAX_BUDGETS} budgets.` };
  return { values };
}

// Runs a comparison makes: seeds x (methods x budgets + full).
export function jobCount(seeds, methods, budgets, includeFull) {
  return seeds * (methods * budgets + (includeFull ? 1 : 0));
}

function finished(c) {
  const n = c.counts || {};
  return (n.succeeded || 0) + (n.failed || 0) + (n.cancelled || 0);
}

export function runsProgress(c) {
  const total = c.counts?.total || 0;
  const done = finished(c);
  const failed = (c.counts?.failed || 0) + (c.counts?.cancelled || 0);
  return h('div', { class: 'progress compact' },
    h('div', {
      class: `bar status-${c.status}`, role: 'progressbar', 'aria-valuemin': '0', 'aria-valuemax': String(total),
      'aria-valuenow': String(done), 'aria-label': `Runs finished in ${c.name || c.id}`,
    }, h('span', { style: { width: `${total ? (100 * done) / total : 0}%` } })),
    h('span', { class: 'progress-label' }, `${fmtInt(done)} / ${fmtInt(total)} runs${failed ? ` · ${fmtInt(failed)} not succeeded` : ''}`));
}

export async function comparisonsView(root, ctx) {
  const [datasets, modelsPage, props] = await Promise.all([
    listAll('/datasets', {}, 200),
    get('/models'),
    schemaDefaults('/api/v1/jobs'),
  ]);
  const datasetName = (id) => datasets.find((d) => d.id === id)?.filename || id;
  let comparisons = [];
  let hasMore = false;
  let timer = null;
  let stopped = false;

  const listBox = h('div', { class: 'comparisons-body', 'aria-live': 'polite', 'aria-busy': 'true' }, h('p', { class: 'loading pad' }, 'Loading comparisons…'));
  const more = h('button', { type: 'button', class: 'secondary', hidden: true, onclick: loadMore }, 'Load older comparisons');
  const formPanel = h('section', { class: 'panel', id: 'new-comparison', 'aria-labelledby': 'new-comparison-title', hidden: true });
  const toggle = h('button', {
    type: 'button', class: 'primary', id: 'new-comparison-toggle', 'aria-controls': 'new-comparison', 'aria-expanded': 'false',
    onclick: () => showForm(formPanel.hidden),
  }, 'New comparison');

  clear(root,
    h('div', { class: 'page-head' },
      h('div', null,
        h('h1', null, 'Compare methods'),
        h('p', { class: 'muted lede' }, 'Does selection pay on your data? A comparison trains every chosen method at every budget, and full data, once per seed, and judges them on held-out rows: paired seed by seed, with a plain-words verdict.')),
      h('div', { class: 'head-actions' }, toggle)),
    formPanel,
    h('section', { class: 'panel flush' }, listBox, h('div', { class: 'more' }, more)));

  function showForm(open) {
    formPanel.hidden = !open;
    toggle.setAttribute('aria-expanded', String(open));
    toggle.textContent = open ? 'Hide the form' : 'New comparison';
    if (open) formPanel.querySelector('input, select')?.focus({ preventScroll: true });
  }

  // ---- the list ----
  function row(c) {
    return h('tr', { 'data-comparison-id': c.id, 'data-status': c.status },
      h('td', { 'data-label': 'Comparison' }, h('div', null, h('a', { href: `#/comparisons/${c.id}`, class: 'job-link' }, c.name || c.id),
        h('div', { class: 'muted mono small' }, c.id))),
      h('td', { 'data-label': 'Status' }, statusBadge(c.status)),
      h('td', { 'data-label': 'Dataset' }, h('div', null, h('a', { href: `#/datasets/${c.dataset_id}` }, datasetName(c.dataset_id)),
        h('div', { class: 'muted small' }, 'held out: ', datasetName(c.eval_dataset_id)))),
      h('td', { 'data-label': 'Methods' }, [...(c.methods || []).map(methodShort), ...(c.include_full ? ['full data'] : [])].join(', ')),
      h('td', { 'data-label': 'Budgets', class: 'nowrap' }, (c.budgets || []).map(pct).join(', ')),
      h('td', { 'data-label': 'Seeds', class: 'num' }, fmtInt(c.seeds)),
      h('td', { 'data-label': 'Progress', class: 'progress-cell' }, runsProgress(c)),
      h('td', { 'data-label': 'Created', class: 'nowrap' }, timeEl(c.created_at)));
  }

  function renderList() {
    listBox.setAttribute('aria-busy', 'false');
    if (!comparisons.length) {
      clear(listBox, h('div', { class: 'empty' },
        h('p', { class: 'empty-title' }, 'No comparisons yet.'),
        h('p', null, 'Pick a training dataset and a held-out one in the form, and the service runs every method against random and full data for you.')));
    } else {
      clear(listBox, h('table', { class: 'table comparisons-table', id: 'comparisons-table' },
        h('thead', null, h('tr', null, ['Comparison', 'Status', 'Dataset', 'Methods', 'Budgets', 'Seeds', 'Progress', 'Created'].map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', null, comparisons.map(row))));
    }
    more.hidden = !hasMore;
  }

  async function loadFirst() {
    const page = await get('/comparisons', { limit: Math.max(PAGE, Math.min(100, comparisons.length)) });
    const fresh = page.data || [];
    const older = comparisons.slice(fresh.length).filter((c) => !fresh.some((f) => f.id === c.id));
    comparisons = [...fresh, ...older];
    if (!older.length) hasMore = page.has_more;
    renderList();
  }

  async function loadMore() {
    more.disabled = true;
    try {
      const page = await get('/comparisons', { limit: PAGE, after: comparisons[comparisons.length - 1]?.id });
      comparisons.push(...(page.data || []).filter((c) => !comparisons.some((x) => x.id === c.id)));
      hasMore = page.has_more;
      renderList();
    } finally {
      more.disabled = false;
    }
  }

  async function poll() {
    if (stopped || !root.isConnected) return; // left before its cleanup was registered
    try {
      if (!document.hidden) await loadFirst();
    } catch (err) {
      console.warn('comparisons refresh failed', err);
    }
    const active = comparisons.some((c) => UNFINISHED.has(c.status));
    if (!stopped) timer = setTimeout(poll, active ? POLL_MS : POLL_MS * 3);
  }

  // ---- the form ----
  const models = (modelsPage.data || []).filter((mdl) => !mdl.kind || mdl.kind === 'base').map((mdl) => mdl.id);
  for (const f of SHARED) {
    const d = props?.[f.name]?.default;
    if (d !== null && d !== undefined) f.def = d;
    if (props?.[f.name]?.description) f.help = props[f.name].description;
  }
  buildForm(formPanel, { ctx, datasets, models });

  try {
    await loadFirst();
  } catch (err) {
    clear(listBox, h('div', { class: 'panel error-box', role: 'alert' }, h('p', null, `Comparisons could not be listed: ${err.message}`)));
  }
  showForm(ctx.params.get('new') === '1' || !comparisons.length);
  timer = setTimeout(poll, POLL_MS);
  return () => { stopped = true; clearTimeout(timer); };
}

function buildForm(panel, { ctx, datasets, models }) {
  const formError = h('div', { class: 'form-error', role: 'alert', hidden: true, id: 'comparison-form-error' });
  const form = h('form', { class: 'job-form', id: 'comparison-form', novalidate: true, onsubmit: submit, oninput: update, onchange: update });
  const errorSlot = () => h('p', { class: 'field-error', hidden: true });

  function field(name, labelText, control, ...hints) {
    return h('div', { class: 'field', id: `field-${name}` },
      typeof labelText === 'string' ? h('label', { for: control.id }, labelText) : labelText,
      control, ...hints, errorSlot());
  }

  const nameInput = h('input', { id: 'c-name', name: 'name', type: 'text', maxlength: '200', placeholder: 'e.g. support-faq selection check' });
  const options = (selected, none) => [h('option', { value: '' }, datasets.length ? none : 'No datasets yet: upload one'),
    ...datasets.map((d) => h('option', { value: d.id, selected: d.id === selected }, `${d.filename} · ${fmtInt(d.n_examples)} examples`))];
  // A first guess from the file names (eval/test/held-out/valid/dev is the held-out one); the user picks anyway.
  const heldOut = datasets.find((d) => /eval|test|held|valid|dev/i.test(d.filename || ''));
  const training = datasets.find((d) => d !== heldOut);
  const datasetSelect = h('select', { id: 'c-dataset_id', name: 'dataset_id', required: true }, options(training?.id, 'Choose the training dataset…'));
  const evalSelect = h('select', { id: 'c-eval_dataset_id', name: 'eval_dataset_id', required: true }, options(heldOut?.id, 'Choose the held-out dataset…'));
  const modelSelect = h('select', { id: 'c-model', name: 'model', required: true }, models.map((id, i) => h('option', { value: id, selected: i === 0 }, id)));

  const methodBoxes = SELECTORS.map((m) => h('input', { type: 'checkbox', id: `c-method-${m}`, name: 'methods', value: m, checked: true }));
  const methodsField = h('fieldset', { class: 'field checks', id: 'field-methods' },
    h('legend', null, 'Methods'),
    h('div', { class: 'check-row' }, methodBoxes.map((box) => h('label', { class: 'inline', for: box.id }, box, METHOD_LABELS[box.value] || box.value))),
    h('p', { class: 'hint' }, 'Each one at every budget. Random is the baseline to beat; uds is also judged against max loss.'),
    errorSlot());

  const budgetsInput = h('input', { id: 'c-budgets', name: 'budgets', type: 'text', inputmode: 'decimal', value: DEFAULT_BUDGETS.map(pct).join(', ').replace(/ %/g, '%'), 'aria-describedby': 'c-budgets-hint c-budgets-chips' });
  const budgetChips = h('ul', { class: 'chips', id: 'c-budgets-chips', 'aria-label': 'Budgets as read' });
  const seedsInput = h('input', { id: 'c-seeds', name: 'seeds', type: 'number', inputmode: 'numeric', min: '2', max: '10', step: '1', value: String(DEFAULT_SEEDS) });
  const fullBox = h('input', { id: 'c-include_full', name: 'include_full', type: 'checkbox', checked: true });
  const labelInput = h('input', { id: 'c-label_field', name: 'label_field', type: 'text', maxlength: '128', placeholder: 'e.g. kind', spellcheck: 'false', autocomplete: 'off' });

  const sharedInputs = SHARED.map((f) => {
    const id = `c-${f.name}`;
    const control = h('input', {
      id, name: f.name, type: 'number', inputmode: f.type === 'int' ? 'numeric' : 'decimal', step: f.type === 'int' ? '1' : 'any',
      min: f.min !== undefined ? String(f.min) : null, placeholder: f.def === null || f.def === undefined ? 'none' : String(f.def),
      'aria-describedby': `${id}-hint`,
    });
    const defText = f.def === null || f.def === undefined ? 'default: the server\'s' : `default: ${f.def}`;
    return { f, control, el: h('div', { class: 'field', id: `field-s-${f.name}` },
      h('label', { for: id }, f.label, f.unit ? h('span', { class: 'unit' }, ` (${f.unit})`) : null),
      control,
      h('p', { class: 'hint', id: `${id}-hint` }, f.help ? `${f.help} ` : '', h('span', { class: 'default' }, defText)),
      errorSlot()) };
  });
  const settingsArea = h('textarea', {
    id: 'c-settings', name: 'settings', rows: 4, spellcheck: 'false', class: 'mono',
    placeholder: '{"candidate_batch_size": 8, "max_steps": 200}', 'aria-describedby': 'c-settings-hint',
  });

  const countBox = h('p', { class: 'estimate', id: 'c-count', 'aria-live': 'polite' });
  const estimateBox = h('p', { class: 'estimate small', id: 'c-estimate', 'aria-live': 'polite' });
  const askServer = debounced(estimateBox, estimateAll);
  const submitBtn = h('button', { type: 'submit', class: 'primary', id: 'submit-comparison' }, 'Start comparison');

  clear(form,
    formError,
    h('fieldset', null, h('legend', null, '1. Data'),
      h('div', { class: 'grid-2' },
        field('dataset_id', 'Training dataset', datasetSelect, h('p', { class: 'hint' }, 'The rows every method selects from.')),
        field('eval_dataset_id', 'Held-out dataset', evalSelect, h('p', { class: 'hint' }, 'Rows no run trains on: every run is judged on them (answer loss, exact match).'))),
      h('p', { class: 'hint' }, 'Upload files on the ', h('a', { href: '#/datasets' }, 'Datasets'), ' page.')),
    h('fieldset', null, h('legend', null, '2. What to compare'),
      h('div', { class: 'grid-2' },
        field('name', 'Name (optional)', nameInput),
        field('model', 'Model', modelSelect, h('p', { class: 'hint' }, 'Models on the server\'s allow-list.'))),
      methodsField,
      h('div', { class: 'grid-3' },
        field('budgets', h('label', { for: 'c-budgets' }, 'Budgets', h('span', { class: 'unit' }, ' (% of each selection group trained on)')), budgetsInput,
          h('p', { class: 'hint', id: 'c-budgets-hint' }, `Comma-separated percentages, 1 to ${MAX_BUDGETS}, e.g. 12.5%, 25%.`), budgetChips),
        field('seeds', h('label', { for: 'c-seeds' }, 'Seeds', h('span', { class: 'unit' }, ' (2 to 10)')), seedsInput,
          h('p', { class: 'hint' }, 'Each seed runs every method on the same candidate order and start, so runs are compared in pairs.')),
        h('div', { class: 'field', id: 'field-include_full' },
          h('span', { class: 'label-like' }, 'Reference'),
          h('label', { class: 'inline', for: 'c-include_full' }, fullBox, 'Include full data (no selection)'),
          h('p', { class: 'hint' }, 'Trains on every row once per seed: what savings and quality are measured against.'),
          errorSlot())),
      field('label_field', 'Label field (optional)', labelInput,
        h('p', { class: 'hint' }, 'A key your training rows carry with a text label, like "kind": the report then shows the share of each label each method picked.'))),
    h('fieldset', null, h('legend', null, '3. Training settings, shared by every run'),
      h('div', { class: 'grid-3' }, sharedInputs.map((s) => s.el)),
      h('details', { class: 'advanced', id: 'c-advanced' }, h('summary', null, 'Advanced: any other setting (JSON)'),
        field('settings', 'Other settings', settingsArea,
          h('p', { class: 'hint', id: 'c-settings-hint' }, 'A JSON object of settings a job accepts (see ', h('a', { href: '#/new' }, 'New job'),
            '), e.g. candidate_batch_size, max_steps, lora_r. Not method, budget, seed, datasets or model: the comparison sets those. The fields above win over the same keys here.')))),
    h('div', { class: 'submit-row' }, h('div', null, countBox, estimateBox), submitBtn));

  clear(panel, h('h2', { id: 'new-comparison-title' }, 'New comparison'), form);

  function selectedMethods() {
    return methodBoxes.filter((b) => b.checked).map((b) => b.value);
  }

  function seedsValue() {
    const raw = seedsInput.value.trim();
    const n = Number(raw);
    return raw !== '' && Number.isInteger(n) && n >= 2 && n <= 10 ? n : null;
  }

  // The comparison's time: one estimate per method and budget (and full), each run once per seed. A comparison's
  // jobs may run side by side, so the sum is the work, not the wall time.
  async function estimateAll() {
    const request = body(true);
    if (!request) return null;
    const runs = request.methods.flatMap((method) => request.budgets.map((budget) => ({ method, budget })));
    if (request.include_full) runs.push({ method: 'full', budget: 1 });
    const common = { ...(request.settings || {}), dataset_id: request.dataset_id, eval_dataset_id: request.eval_dataset_id, model: request.model };
    const estimates = await Promise.all(runs.map((run) => fetchEstimate({ ...common, ...run })));
    const unknown = [...new Set(runs.filter((_, i) => !isNum(estimates[i].time?.seconds)).map((run) => run.method))];
    const seconds = estimates.reduce((sum, est) => sum + (est.time?.seconds || 0), 0) * request.seeds;
    const peak = estimates.reduce((worst, est) => (est.memory && (!worst || est.memory.cpu.peak > worst.cpu.peak) ? est.memory : worst), null);
    const time = unknown.length
      ? `Time unknown: no measurement yet for ${unknown.join(', ')} on ${request.model}`
      : `Time ≈ ${fmtDuration(seconds)} of training in all`;
    return h('span', { class: 'server-estimate', 'data-seconds': unknown.length ? '' : String(seconds) },
      h('strong', null, time), peak ? ` · ${memoryText(peak)} per job` : '');
  }

  // The number of jobs, live: seeds x (methods x budgets + full).
  function update() {
    askServer();
    const budgets = parseBudgets(budgetsInput.value);
    clear(budgetChips, budgets.values ? budgets.values.map((b) => h('li', { class: 'chip' }, pct(b))) : h('li', { class: 'chip bad' }, budgets.error));
    const methods = selectedMethods();
    const seeds = seedsValue();
    countBox.dataset.jobs = '';
    if (!methods.length && !fullBox.checked) { clear(countBox, h('span', { class: 'muted' }, 'Tick at least one method.')); return; }
    if (!methods.length) { clear(countBox, h('span', { class: 'muted' }, 'Tick at least one method: full data alone compares nothing.')); return; }
    if (budgets.error) { clear(countBox, h('span', { class: 'muted' }, 'Fix the budgets to see how many jobs this starts.')); return; }
    if (seeds === null) { clear(countBox, h('span', { class: 'muted' }, 'Seeds: a whole number from 2 to 10.')); return; }
    const n = jobCount(seeds, methods.length, budgets.values.length, fullBox.checked);
    countBox.dataset.jobs = String(n);
    const limit = ctx.info?.max_comparison_jobs;
    const active = ctx.info?.max_active_jobs;  // unfinished jobs a tenant may have at once, these included
    let over = null;
    if (isNum(limit) && n > limit) over = ` · over this server's limit of ${limit} jobs per comparison`;
    else if (isNum(active) && active > 0 && n > active) over = ` · over this server's limit of ${active} unfinished jobs per tenant`;
    else if (isNum(active) && active > 0) over = h('span', { class: 'muted' }, ` · counts towards your ${active} unfinished jobs at most`);
    clear(countBox,
      h('strong', null, `${fmtInt(n)} jobs`),
      ` = ${seeds} seeds × (${methods.length} method${methods.length === 1 ? '' : 's'} × ${budgets.values.length} budget${budgets.values.length === 1 ? '' : 's'}${fullBox.checked ? ' + full data' : ''})`,
      typeof over === 'string' ? h('span', { class: 'error-text' }, over) : over);
  }

  function clearErrors() {
    formError.hidden = true;
    for (const p of form.querySelectorAll('.field-error')) p.hidden = true;
    for (const el of form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
  }

  // The field an error's `param` names: "budgets.1" -> budgets, "settings.learning_rate" -> the learning rate
  // field, "settings.lora_r" -> the JSON box (opened).
  function fieldFor(param) {
    if (!param) return null;
    const p = String(param);
    const top = p.split(/[.[]/)[0];
    if (top === 'settings') {
      const key = p.slice('settings.'.length).split(/[.[]/)[0];
      const named = key && form.querySelector(`#field-s-${CSS.escape(key)}`);
      if (named) return named;
      form.querySelector('#c-advanced').open = true;
      return form.querySelector('#field-settings');
    }
    return form.querySelector(`#field-${CSS.escape(top)}`) || form.querySelector(`#field-s-${CSS.escape(top)}`);
  }

  function showFieldError(param, message) {
    const el = fieldFor(param);
    if (!el) return false;
    const p = el.querySelector(':scope > .field-error');
    p.textContent = message;
    p.hidden = false;
    el.querySelector('input:not([type=checkbox]), select, textarea')?.setAttribute('aria-invalid', 'true');
    el.scrollIntoView({ block: 'center' });
    return true;
  }

  let quiet = false;  // while the estimate builds the request: a half-typed form is not an error to show
  function fail(param, message) {
    if (!quiet) showFieldError(param, message);
    return null;
  }

  function body(silent = false) {
    quiet = silent;
    try {
      return readForm();
    } finally {
      quiet = false;
    }
  }

  function readForm() {
    const out = { dataset_id: datasetSelect.value, eval_dataset_id: evalSelect.value, model: modelSelect.value };
    if (!out.dataset_id) return fail('dataset_id', 'Choose the training dataset.');
    if (!out.eval_dataset_id) return fail('eval_dataset_id', 'Choose the held-out dataset the methods are judged on.');
    if (nameInput.value.trim()) out.name = nameInput.value.trim();
    out.methods = selectedMethods();
    if (!out.methods.length) return fail('methods', 'Tick at least one method.');
    const budgets = parseBudgets(budgetsInput.value);
    if (budgets.error) return fail('budgets', budgets.error);
    out.budgets = budgets.values;
    out.seeds = seedsValue();
    if (out.seeds === null) return fail('seeds', 'A whole number from 2 to 10.');
    out.include_full = fullBox.checked;
    if (labelInput.value.trim()) out.label_field = labelInput.value.trim();
    let settings = {};
    const text = settingsArea.value.trim();
    if (text) {
      try {
        settings = JSON.parse(text);
      } catch (err) {
        form.querySelector('#c-advanced').open = true;
        return fail('settings', `Not valid JSON: ${err.message}`);
      }
      if (!settings || typeof settings !== 'object' || Array.isArray(settings)) {
        form.querySelector('#c-advanced').open = true;
        return fail('settings', 'Write a JSON object: {"name": value, ...}.');
      }
    }
    for (const { f, control } of sharedInputs) {
      const raw = control.value.trim();
      if (raw === '') continue;
      const v = Number(raw);
      if (!Number.isFinite(v) || (f.min !== undefined && v < f.min)) return fail(`settings.${f.name}`, `Enter a number${f.min !== undefined ? ` of at least ${f.min}` : ''}.`);
      if (f.type === 'int' && !Number.isInteger(v)) return fail(`settings.${f.name}`, 'Enter a whole number.');
      settings[f.name] = v;
    }
    if (Object.keys(settings).length) out.settings = settings;
    return out;
  }

  async function submit(e) {
    e.preventDefault();
    clearErrors();
    const request = body();
    if (!request) return;
    submitBtn.disabled = true;
    submitBtn.textContent = 'Starting…';
    try {
      const c = await post('/comparisons', request);
      toast(`Comparison ${c.name || c.id} started: ${fmtInt(c.counts?.total)} jobs.`);
      ctx.navigate(`#/comparisons/${c.id}`);
    } catch (err) {
      const shown = err instanceof ApiError && err.param && showFieldError(err.param, err.message);
      clear(formError, h('strong', null, 'The comparison was not started. '), err.message);
      formError.hidden = false;
      if (!shown) formError.scrollIntoView({ block: 'center' });
    } finally {
      submitBtn.disabled = false;
      submitBtn.textContent = 'Start comparison';
    }
  }

  update();
}
