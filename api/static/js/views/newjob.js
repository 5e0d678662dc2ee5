// New job: upload or pick a dataset, pick a model from the allow-list, budget, method and the main settings.
import { h, clear, toast, fmtInt, fmtBytes, fmtPct, METHOD_LABELS, METHOD_HELP, isNum } from '../dom.js';
import { get, post, upload, listAll, ApiError } from '../api.js';
import { RECIPES } from '../recipes.js';
import { debounced, fetchEstimate, estimateLine } from '../estimate.js';

// Defaults mirror uds/config.py; the server's OpenAPI schema overrides them when it states its own.
const MAIN = [
  { name: 'recipe', label: 'Recipe', type: 'select', def: '', options: ['', 'paper'], labels: { '': 'none', paper: 'paper' }, help: 'paper: the official script\'s settings (groups of 4, k 1, 32 picks a step, gaussian LoRA init, …) fill the form; what you change wins.' },
  { name: 'candidate_batch_size', label: 'Selection group', unit: 'candidates / group', type: 'int', def: 8, min: 1, help: 'B: candidates ranked against each other; the top k = budget × B of each group are trained on (paper: 8).' },
  { name: 'train_batch_size', label: 'Examples per step', unit: 'selected / step', type: 'int', def: 32, min: 1, help: 'Picks accumulated into one optimizer step (OpenAI\'s batch_size); sets the groups per step when that is empty.' },
  { name: 'groups_per_step', label: 'Groups per step', unit: 'groups', type: 'int', def: null, min: 1, help: 'Empty: train_batch_size ÷ k, fewer on small data (at least 4 steps an epoch).' },
  { name: 'group_by_length', label: 'Group by length', type: 'bool', def: true, help: 'Groups of near-equal length, so utility is not just length (the official --group_by_length).' },
  { name: 'alpha', label: 'α, diversity weight', type: 'alpha', def: 'paper', help: '"paper": the official 1.5e-3 in this job\'s units; "auto": rescaled to the spread of utility; or a number ≥ 0. UDS only.' },
  { name: 'epochs', label: 'Epochs', unit: 'passes', type: 'int', def: 1, min: 1 },
  { name: 'max_steps', label: 'Max steps', unit: 'steps', type: 'int', def: null, min: 1, help: 'When set, the length of the run (overrides epochs). Empty: as many steps as the epochs need.' },
  { name: 'learning_rate', label: 'Learning rate', type: 'float', def: 1.5e-4, min: 0 },
  { name: 'lora_r', label: 'LoRA rank r', type: 'int', def: 8, min: 1 },
  { name: 'lora_alpha', label: 'LoRA alpha', type: 'int', def: 16, min: 1 },
  { name: 'max_seq_len', label: 'Max sequence length', unit: 'tokens', type: 'int', def: 512, min: 1 },
  { name: 'micro_batch_size', label: 'Micro-batch size', unit: 'examples', type: 'int', def: 4, min: 1, help: 'Selected examples per forward/backward pass (gradient accumulation).' },
  { name: 'seed', label: 'Seed', type: 'int', def: 0, min: 0 },
];
const ADVANCED = [
  { name: 'warmup_ratio', label: 'Warm-up', unit: 'fraction of steps', type: 'float', def: 0.01, min: 0 },
  { name: 'lr_schedule', label: 'LR schedule', type: 'select', def: 'linear', options: ['cosine', 'linear', 'constant'] },
  { name: 'loss_weighting', label: 'Loss weighting', type: 'select', def: 'example', options: ['example', 'token'], help: 'example: each selected example counts equally (the paper); token: each loss token does.' },
  { name: 'lora_init', label: 'LoRA init', type: 'select', def: 'gaussian', options: ['gaussian', 'default'], help: 'How LoRA A starts: gaussian (the paper) or PEFT\'s default (Kaiming uniform).' },
  { name: 'loss_on', label: 'Loss on', type: 'select', def: 'all', options: ['all', 'answer'], help: 'all: every non-padding token (the paper); answer: assistant turns only.' },
  { name: 'score_on', label: 'Score on', type: 'select', def: 'all', options: ['all', 'answer'], help: 'Rows of the logits UDS scores. all: every real token (the paper); answer: the assistant answers only.' },
  { name: 'lora_dropout', label: 'LoRA dropout', type: 'float', def: 0, min: 0 },
  { name: 'weight_decay', label: 'Weight decay', type: 'float', def: 0, min: 0 },
  { name: 'max_grad_norm', label: 'Max gradient norm', unit: 'L2, clipping', type: 'float', def: 1, min: 0 },
  { name: 'buffer_size', label: 'Diversity memory', unit: 'examples', type: 'int', def: 1024, min: 1 },
  { name: 'devices', label: 'Devices', unit: 'GPUs of one worker', type: 'int', def: 1, min: 1, help: 'Data-parallel over this many devices; picks exactly the examples one device picks. More than the server offers is refused.' },
  { name: 'checkpoint_every', label: 'Checkpoint every', unit: 'steps', type: 'int', def: 50, min: 1 },
  { name: 'eval_every', label: 'Evaluate every', unit: 'steps', type: 'int', def: null, min: 1, help: 'Needs an eval dataset. Empty: at the end only.' },
];

// The request schema of POST `path` (POST /api/v1/jobs by default), if the server publishes it: which fields exist
// and their defaults. The comparisons form reads the shared training settings' help from it too.
export async function schemaDefaults(path = '/api/v1/jobs') {
  try {
    const res = await fetch('/openapi.json', { headers: { Accept: 'application/json' } });
    if (!res.ok) return null;
    const spec = await res.json();
    const op = spec.paths?.[path]?.post;
    let schema = op?.requestBody?.content?.['application/json']?.schema;
    const resolve = (s) => (s?.$ref ? spec.components?.schemas?.[s.$ref.split('/').pop()] : s);
    schema = resolve(schema);
    if (!schema?.properties) return null;
    const props = {};
    // Help texts and choices come from the server too (TrainConfig's field metadata), so the form says what the
    // server will do; the texts above are the fallback when the schema cannot be read.
    for (const [k, v] of Object.entries(schema.properties)) {
      props[k] = { default: v.default ?? v.examples?.[0], hasDefault: 'default' in v, description: v.description, choices: v['x-choices'] };
    }
    return props;
  } catch {
    return null;
  }
}

export async function newJobView(root, ctx) {
  const fromId = ctx.params.get('from');
  const [datasetsPage, modelsPage, props, from] = await Promise.all([
    listAll('/datasets', {}, 200),
    get('/models'),
    schemaDefaults(),
    fromId ? get(`/jobs/${encodeURIComponent(fromId)}`).catch(() => null) : Promise.resolve(null),
  ]);
  let datasets = datasetsPage;
  // Base models only: the allow-list. Finished fine-tunes are listed too but are not a starting point here.
  // The server lists the built-in real model first when it is installed, so it is the form's default.
  const models = (modelsPage.data || []).filter((mdl) => !mdl.kind || mdl.kind === 'base').map((mdl) => mdl.id);

  const fields = [...MAIN, ...ADVANCED].filter((f) => !props || f.name in props);
  for (const f of fields) {
    // The service marks omitted settings as null ("use TrainConfig's default"), so only a real value overrides ours.
    const d = props?.[f.name]?.default;
    if (d !== null && d !== undefined) f.def = d;
    if (props?.[f.name]?.description) f.help = props[f.name].description;
    if (f.type === 'select' && props?.[f.name]?.choices) f.options = f.name === 'recipe' ? ['', ...props[f.name].choices] : props[f.name].choices;
  }
  const prefill = from ? { ...(from.config || {}), name: from.name ? `${from.name} (copy)` : '', dataset_id: from.dataset_id, eval_dataset_id: from.eval_dataset_id, model: from.model, method: from.method, budget: from.budget } : {};

  const formError = h('div', { class: 'form-error', role: 'alert', hidden: true });
  const form = h('form', { class: 'job-form', novalidate: true, onsubmit: submit });

  // ---- dataset ----
  const datasetSelect = h('select', { id: 'f-dataset_id', name: 'dataset_id', required: true, onchange: () => { previewDataset(); estimate(); } });
  const evalSelect = h('select', { id: 'f-eval_dataset_id', name: 'eval_dataset_id' });
  function fillDatasetOptions(selectedId, evalId) {
    clear(datasetSelect, h('option', { value: '' }, datasets.length ? 'Choose a dataset…' : 'No datasets yet: upload one'),
      datasets.map((d) => h('option', { value: d.id, selected: d.id === selectedId }, `${d.filename} · ${fmtInt(d.n_examples)} examples · ${d.format || ''}`)));
    clear(evalSelect, h('option', { value: '' }, 'None'),
      datasets.map((d) => h('option', { value: d.id, selected: d.id === evalId }, `${d.filename} · ${fmtInt(d.n_examples)} examples`)));
  }
  fillDatasetOptions(prefill.dataset_id || datasets[0]?.id, prefill.eval_dataset_id);

  const fileInput = h('input', { type: 'file', id: 'f-file', name: 'file', accept: '.jsonl,.json,application/jsonl,application/x-ndjson,text/plain', onchange: onFile });
  const uploadStatus = h('div', { class: 'upload-status', 'aria-live': 'polite', id: 'upload-status' });
  const datasetPreview = h('div', { class: 'dataset-preview' });

  async function onFile() {
    const file = fileInput.files[0];
    if (!file) return;
    clear(uploadStatus, h('p', { class: 'loading' }, `Uploading and validating ${file.name} (${fmtBytes(file.size)})…`),
      h('progress', { max: '1', value: '0', id: 'upload-progress' }));
    try {
      const ds = await upload('/datasets', file, (f) => { const p = uploadStatus.querySelector('progress'); if (p) p.value = f; });
      datasets = [ds, ...datasets.filter((d) => d.id !== ds.id)];
      fillDatasetOptions(ds.id, evalSelect.value);
      clear(uploadStatus, h('p', { class: 'ok-text', id: 'upload-ok' }, `✓ ${ds.filename}: ${fmtInt(ds.n_examples)} examples, ${ds.format} format, ${fmtBytes(ds.bytes)}. Selected below.`));
      previewDataset();
      estimate();
    } catch (err) {
      clear(uploadStatus, problemsBox(err, file.name));
    } finally {
      fileInput.value = '';
    }
  }

  async function previewDataset() {
    const id = datasetSelect.value;
    if (!id) { clear(datasetPreview); return; }
    clear(datasetPreview, h('p', { class: 'loading small' }, 'Loading a preview…'));
    try {
      const page = await get(`/datasets/${id}/rows`, { offset: 0, limit: 3 });
      if (datasetSelect.value !== id) return;
      clear(datasetPreview, h('p', { class: 'small muted' }, 'First rows:'),
        h('ul', { class: 'previews' }, (page.data || []).map((r) => h('li', null, h('span', { class: 'mono muted' }, `#${r.row ?? ''} `), r.preview || JSON.stringify(r).slice(0, 200)))));
    } catch (err) {
      clear(datasetPreview, h('p', { class: 'small muted' }, `No preview: ${err.message}`));
    }
  }

  // ---- model, method, budget ----
  const nameInput = h('input', { id: 'f-name', name: 'name', type: 'text', maxlength: '200', placeholder: 'e.g. uds-12.5pct-run1', value: prefill.name || '' });
  const modelSelect = h('select', { id: 'f-model', name: 'model', required: true, onchange: estimate },
    models.map((id) => h('option', { value: id, selected: id === (prefill.model || models[0]) }, id)));
  const methodSelect = h('select', { id: 'f-method', name: 'method', onchange: () => { syncMethod(); estimate(); } },
    Object.entries(METHOD_LABELS).map(([v, label]) => h('option', { value: v, selected: v === (prefill.method || 'uds') }, label)));
  const methodHelp = h('p', { class: 'hint', id: 'method-help' });
  const budgetDefault = isNum(props?.budget?.default) ? props.budget.default : 0.125;
  const budgetInput = h('input', {
    id: 'f-budget', name: 'budget', type: 'number', min: '0.1', max: '100', step: 'any', required: true,
    value: String(+((prefill.budget ?? budgetDefault) * 100).toFixed(4)), oninput: estimate, 'aria-describedby': 'budget-help',
  });
  const budgetHelp = h('p', { class: 'hint', id: 'budget-help' });

  function syncMethod() {
    const method = methodSelect.value;
    methodHelp.textContent = METHOD_HELP[method] || '';
    if (method === 'full') { budgetInput.value = '100'; budgetInput.disabled = true; } else budgetInput.disabled = false;
    const alpha = form.querySelector('#f-alpha');
    if (alpha) alpha.disabled = method !== 'uds';
  }

  // ---- settings ----
  function input(f) {
    const id = `f-${f.name}`;
    const start = prefill[f.name] !== undefined ? prefill[f.name] : f.def;
    let control;
    if (f.type === 'select') {
      control = h('select', { id, name: f.name, onchange: f.name === 'recipe' ? applyRecipe : estimate }, f.options.map((o) => h('option', { value: o, selected: o === (start ?? '') }, f.labels?.[o] ?? o)));
    } else if (f.type === 'bool') {
      control = h('input', { id, name: f.name, type: 'checkbox', checked: start !== false, 'aria-describedby': `${id}-hint` });
    } else {
      control = h('input', {
        id, name: f.name, type: f.type === 'alpha' ? 'text' : 'number', inputmode: f.type === 'int' ? 'numeric' : 'decimal',
        step: f.type === 'int' ? '1' : 'any', min: f.min !== undefined ? String(f.min) : null,
        value: start === null || start === undefined ? '' : String(start), placeholder: f.def === null ? 'none' : String(f.def),
        oninput: estimate, 'aria-describedby': `${id}-hint`,
      });
    }
    const defText = f.def === null || f.def === undefined || f.def === '' ? 'default: none' : `default: ${f.def}`;
    return h('div', { class: 'field', id: `field-${f.name}` },
      h('label', { for: id }, f.label, f.unit ? h('span', { class: 'unit' }, ` (${f.unit})`) : null),
      control,
      h('p', { class: 'hint', id: `${id}-hint` }, f.help ? `${f.help} ` : '', h('span', { class: 'default' }, defText)),
      h('p', { class: 'field-error', hidden: true }));
  }

  const mainFields = fields.filter((f) => MAIN.includes(f));
  const advFields = fields.filter((f) => ADVANCED.includes(f));
  const estimateBox = h('div', { class: 'estimate', 'aria-live': 'polite', id: 'estimate' });
  // The server's estimate (time, tokens, memory) under the quick count, asked for once typing pauses.
  const serverEstimate = h('div', { class: 'estimate small', id: 'server-estimate' });
  const askServer = debounced(serverEstimate, async () => {
    const body = requestBody(() => false);
    return body ? estimateLine(await fetchEstimate(body)) : null;
  });
  const submitBtn = h('button', { type: 'submit', class: 'primary', id: 'submit-job' }, 'Start job');

  clear(form,
    formError,
    h('fieldset', null, h('legend', null, '1. Data'),
      h('div', { class: 'field' }, h('label', { for: 'f-file' }, 'Upload a JSONL dataset'), fileInput,
        h('p', { class: 'hint' }, 'OpenAI chat ({"messages": [...]}), Alpaca (instruction / input / output), prompt / completion or ShareGPT (conversations), one JSON object per line. The whole file is validated; problems are listed by line.')),
      uploadStatus,
      h('div', { class: 'grid-2' },
        h('div', { class: 'field' }, h('label', { for: 'f-dataset_id' }, 'Training dataset'), datasetSelect, h('p', { class: 'field-error', hidden: true })),
        h('div', { class: 'field' }, h('label', { for: 'f-eval_dataset_id' }, 'Eval dataset (optional)'), evalSelect,
          h('p', { class: 'hint' }, 'Held-out rows for eval loss and exact-match accuracy.'), h('p', { class: 'field-error', hidden: true }))),
      datasetPreview),
    h('fieldset', null, h('legend', null, '2. Model and selection'),
      h('div', { class: 'grid-2' },
        h('div', { class: 'field' }, h('label', { for: 'f-name' }, 'Job name (optional)'), nameInput, h('p', { class: 'field-error', hidden: true })),
        h('div', { class: 'field' }, h('label', { for: 'f-model' }, 'Model'), modelSelect, h('p', { class: 'hint' }, 'Models on the server\'s allow-list. smollm2-135m-instruct is a real 135 M chat model (its first job converts it, about half a minute); uds-tiny is a 2 M test model.'), h('p', { class: 'field-error', hidden: true })),
        h('div', { class: 'field' }, h('label', { for: 'f-method' }, 'Selection method'), methodSelect, methodHelp, h('p', { class: 'field-error', hidden: true })),
        h('div', { class: 'field' }, h('label', { for: 'f-budget' }, 'Budget', h('span', { class: 'unit' }, ' (% of each selection group trained on)')), budgetInput, budgetHelp, h('p', { class: 'field-error', hidden: true })))),
    h('fieldset', null, h('legend', null, '3. Training settings'),
      h('div', { class: 'grid-3' }, mainFields.map(input)),
      advFields.length ? h('details', { class: 'advanced' }, h('summary', null, 'Advanced settings'), h('div', { class: 'grid-3' }, advFields.map(input))) : null),
    h('div', { class: 'submit-row' }, h('div', null, estimateBox, serverEstimate), submitBtn));

  clear(root,
    h('div', { class: 'page-head' }, h('h1', null, from ? `New job like ${from.name || from.id}` : 'New job')),
    h('section', { class: 'panel' }, form));

  function value(f) {
    if (!f) return undefined;
    const el = form.querySelector(`#f-${f.name}`);
    if (!el || el.disabled) return undefined;
    if (f.type === 'bool') return el.checked;
    const raw = el.value.trim();
    if (f.type === 'select') return raw === '' ? undefined : raw; // recipe "none": not sent
    if (raw === '') return f.def === null ? null : undefined;
    if (f.type === 'alpha') return raw === 'auto' || raw === 'paper' ? raw : Number(raw);
    return Number(raw);
  }

  function setting(name) {
    return value(fields.find((f) => f.name === name));
  }

  // Selection groups per optimizer step, as uds/config.py groups_per_step decides it.
  function groupsPerStep(nGroups, k) {
    const given = setting('groups_per_step');
    if (isNum(given)) return nGroups ? Math.min(given, nGroups) : given;
    const wanted = Math.max(1, Math.round((setting('train_batch_size') || 32) / k));
    return nGroups ? Math.max(1, Math.min(wanted, Math.floor(nGroups / 4))) : wanted;
  }

  // The budget or the group size in error (out of range, empty, refused by the server): no k is shown then, since
  // a clamped one ("k = 32 of every 32 (100.0 %)" for 150 %) reads as what the job would do.
  function budgetProblem(method) {
    const group = form.querySelector('#f-candidate_batch_size');
    const B = setting('candidate_batch_size');
    if ((group && !group.checkValidity()) || (B !== undefined && B !== null && !(Number.isInteger(B) && B >= 1))) {
      return 'The selection group must be a whole number of candidates, 1 or more.';
    }
    if (method === 'full') return null;
    const pct = Number(budgetInput.value);
    if (!budgetInput.checkValidity() || !(pct >= 0.1 && pct <= 100)) {
      return 'A percentage between 0.1 and 100.';
    }
    return null;
  }

  function estimate() {
    askServer();
    const ds = datasets.find((d) => d.id === datasetSelect.value);
    const method = methodSelect.value;
    const problem = budgetProblem(method);
    if (problem) {
      budgetHelp.textContent = problem;
      clear(estimateBox, h('span', { class: 'muted' }, 'Fix the budget to see the size of the run.'));
      return;
    }
    const B = setting('candidate_batch_size') || 8;
    const budget = method === 'full' ? 1 : Number(budgetInput.value) / 100;
    const k = Math.max(1, Math.min(B, Math.round(budget * B)));
    const nGroups = ds ? Math.max(1, Math.ceil(ds.n_examples / B)) : null;
    const gps = groupsPerStep(nGroups, k);
    budgetHelp.textContent = isNum(budget) && budget > 0
      ? `Trains on k = ${k} of every ${B} candidates in a group (${fmtPct(k / B)}); ${gps} group${gps === 1 ? '' : 's'} a step: ${fmtInt(gps * k)} picks per optimizer step${ds ? '' : ' (a small dataset gets fewer)'}.`
      : 'A percentage between 0.1 and 100.';
    if (!ds) { clear(estimateBox, h('span', { class: 'muted' }, 'Pick a dataset to see the size of the run.')); return; }
    const epochs = setting('epochs') || 1;
    const maxSteps = setting('max_steps');
    const perEpoch = Math.ceil(nGroups / gps);
    // max_steps, when set, is the length of the run and overrides epochs (uds/config.py total_steps).
    const steps = maxSteps || epochs * perEpoch;
    const full = Math.floor(steps / perEpoch);
    const rest = steps % perEpoch;
    const scored = full * ds.n_examples + Math.min(rest * gps * B, ds.n_examples);
    const trained = Math.min((full * nGroups + Math.min(rest * gps, nGroups)) * k, scored);
    clear(estimateBox, h('strong', null, `≈ ${fmtInt(steps)} steps`),
      ` · scores ${fmtInt(scored)} examples, trains on ${fmtInt(trained)} · backward passes saved ≈ ${fmtPct(1 - trained / scored, 0)}`);
  }

  // A recipe fills every setting the user has not changed by hand (and going back to none restores the defaults);
  // the server applies the same recipe to whatever the request leaves out.
  const touched = new Set();
  form.addEventListener('input', (e) => { if (e.target.name) touched.add(e.target.name); });
  form.addEventListener('change', (e) => { if (e.target.name && e.target.name !== 'recipe') touched.add(e.target.name); askServer(); });
  function applyRecipe() {
    const recipe = RECIPES[setting('recipe')] || null;
    for (const f of fields) {
      const el = form.querySelector(`#f-${f.name}`);
      if (!el || f.name === 'recipe' || touched.has(f.name)) continue;
      const v = recipe && f.name in recipe ? recipe[f.name] : f.def;
      if (f.type === 'bool') el.checked = v !== false;
      else el.value = v === null || v === undefined ? '' : String(v);
    }
    if (recipe && !touched.has('method')) { methodSelect.value = recipe.method; syncMethod(); }
    if (!touched.has('budget') && methodSelect.value !== 'full') budgetInput.value = String(+(((recipe?.budget) ?? budgetDefault) * 100).toFixed(4));
    estimate();
  }

  function showFieldError(param, message) {
    const field = param && form.querySelector(`#field-${param}`) || form.querySelector(`#f-${param}`)?.closest('.field');
    if (!field) return false;
    const p = field.querySelector('.field-error');
    p.textContent = message;
    p.hidden = false;
    field.querySelector('input, select')?.setAttribute('aria-invalid', 'true');
    field.scrollIntoView({ block: 'center' });
    return true;
  }

  // The request for the form as it stands, or null after `report(param, message)` was told what is wrong.
  function requestBody(report) {
    const body = { dataset_id: datasetSelect.value, model: modelSelect.value, method: methodSelect.value };
    if (!body.dataset_id) { report('dataset_id', 'Upload a dataset or choose one.'); return null; }
    body.budget = body.method === 'full' ? 1 : Number(budgetInput.value) / 100;
    if (!(body.budget > 0 && body.budget <= 1)) { report('budget', 'Budget must be a percentage above 0 and at most 100.'); return null; }
    if (nameInput.value.trim()) body.name = nameInput.value.trim();
    if (evalSelect.value) body.eval_dataset_id = evalSelect.value;
    const recipe = RECIPES[setting('recipe')];
    for (const f of fields) {
      const v = value(f);
      if (v === undefined) continue;
      if (typeof v === 'number' && !Number.isFinite(v)) { report(f.name, 'Enter a number.'); return null; }
      if (f.type === 'int' && typeof v === 'number' && !Number.isInteger(v)) { report(f.name, 'Enter a whole number.'); return null; }
      // Advanced settings left at their defaults are not sent, so the server's defaults apply (unless a recipe
      // would put another value there: then the default the user sees is what they asked for).
      if (ADVANCED.includes(f) && v === f.def && !(recipe && f.name in recipe && recipe[f.name] !== v)) continue;
      if (v === null) continue;
      body[f.name] = v;
    }
    return body;
  }

  async function submit(e) {
    e.preventDefault();
    formError.hidden = true;
    for (const p of form.querySelectorAll('.field-error')) p.hidden = true;
    for (const el of form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');

    const body = requestBody(showFieldError);
    if (!body) return;
    submitBtn.disabled = true;
    submitBtn.textContent = 'Starting…';
    try {
      const job = await post('/jobs', body);
      toast(`Job ${job.name || job.id} submitted.`);
      ctx.navigate(`#/jobs/${job.id}`);
    } catch (err) {
      const shown = err instanceof ApiError && err.param && showFieldError(err.param, err.message);
      clear(formError, h('strong', null, 'The job was not started. '), err.message);
      formError.hidden = false;
      if (!shown) formError.scrollIntoView({ block: 'center' });
    } finally {
      submitBtn.disabled = false;
      submitBtn.textContent = 'Start job';
    }
  }

  syncMethod();
  estimate();
  previewDataset();
}

export function problemsBox(err, filename) {
  const problems = err.problems || [];
  return h('div', { class: 'problems', role: 'alert', id: 'upload-problems' },
    h('p', null, h('strong', null, `${filename} was not stored. `), err.message),
    problems.length ? h('ul', { class: 'problem-list' }, problems.map((p) => h('li', null,
      h('span', { class: 'line' }, p.line ? `line ${p.line}` : 'whole file'), ' ', p.reason))) : null,
    problems.length >= 100 ? h('p', { class: 'small muted' }, 'Only the first problems are listed.') : null);
}
