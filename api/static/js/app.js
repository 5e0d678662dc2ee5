// Entry point: asks /api/v1/info whether a key is needed, then routes on the URL hash.
//   #/                 jobs            #/jobs/ID?tab=charts|data|events|details   one job
//   #/new              new job form    #/compare?ids=A,B                          compare jobs
//   #/datasets         datasets        #/datasets/ID                              one dataset's rows
//   #/comparisons      compare methods (list + new comparison form; ?new=1 opens the form)
//   #/comparisons/ID   one comparison: its runs as a grid, the verdict and the report
import { h, clear, toast, loadMethods } from './dom.js';
import { get, getKey, setKey, ApiError } from './api.js';
import { jobsView } from './views/jobs.js';
import { jobView } from './views/job.js';
import { compareView } from './views/compare.js';
import { newJobView } from './views/newjob.js';
import { datasetsView, datasetView } from './views/datasets.js';
import { comparisonsView } from './views/comparisons.js';
import { comparisonView } from './views/comparison.js';

const main = document.getElementById('main');
const state = { info: null, cleanup: null };

const routes = [
  [/^\/?$/, () => ['jobs', jobsView]],
  [/^\/jobs\/([^/]+)$/, (m) => ['jobs', jobView, decodeURIComponent(m[1])]],
  [/^\/new$/, () => ['new', newJobView]],
  [/^\/compare$/, () => ['compare', compareView]],
  [/^\/datasets$/, () => ['datasets', datasetsView]],
  [/^\/datasets\/([^/]+)$/, (m) => ['datasets', datasetView, decodeURIComponent(m[1])]],
  [/^\/comparisons$/, () => ['comparisons', comparisonsView]],
  [/^\/comparisons\/([^/]+)$/, (m) => ['comparisons', comparisonView, decodeURIComponent(m[1])]],
];

function parseHash() {
  const raw = location.hash.replace(/^#/, '') || '/';
  const [path, search] = raw.split('?');
  return { path, params: new URLSearchParams(search || '') };
}

export function navigate(hash, { replace = false } = {}) {
  if (replace || location.hash === hash) {
    history.replaceState(null, '', hash);
    render();
  } else {
    location.hash = hash; // hashchange renders
  }
}

async function render() {
  if (state.cleanup) {
    try { state.cleanup(); } catch (err) { console.error(err); }
    state.cleanup = null;
  }
  const { path, params } = parseHash();
  let match = null;
  for (const [pattern, make] of routes) {
    const m = pattern.exec(path);
    if (m) { match = make(m); break; }
  }
  for (const a of document.querySelectorAll('.mainnav a')) {
    a.toggleAttribute('aria-current', !!match && a.dataset.nav === match[0]);
    if (a.hasAttribute('aria-current')) a.setAttribute('aria-current', 'page');
  }
  if (!match) {
    clear(main, h('section', { class: 'panel empty' }, h('h1', null, 'Page not found'), h('p', null, h('a', { href: '#/' }, 'Back to the jobs'))));
    return;
  }
  const [, view, id] = match;
  const root = h('div', { class: 'view' });
  clear(main, root);
  const ctx = { info: state.info, params, navigate };
  try {
    state.cleanup = (await view(root, ctx, id)) || null;
  } catch (err) {
    showError(root, err);
  }
}

export function showError(root, err) {
  console.error(err);
  clear(root, h('section', { class: 'panel error-box', role: 'alert' },
    h('h2', null, err instanceof ApiError && err.status === 404 ? 'Not found' : 'Something went wrong'),
    h('p', null, err.message || String(err)),
    h('p', null, h('a', { href: '#/' }, 'Back to the jobs'))));
}

// ---- API key ----

const dialog = document.getElementById('key-dialog');
const keyForm = document.getElementById('key-form');
const keyInput = document.getElementById('key-input');
const keyReason = document.getElementById('key-dialog-reason');
let waitingForKey = null;

function askForKey(reason) {
  if (reason) keyReason.textContent = reason;
  keyInput.value = '';
  if (!dialog.open) dialog.showModal();
  keyInput.focus();
  if (!waitingForKey) waitingForKey = new Promise((resolve) => { dialog.addEventListener('close', resolve, { once: true }); });
  return waitingForKey;
}

document.getElementById('key-cancel').addEventListener('click', () => {
  // Without a key nothing works where one is required; elsewhere cancelling keeps the key-less view.
  if (state.info?.auth_required && !getKey()) return;
  waitingForKey = null;
  dialog.close();
});

keyForm.addEventListener('submit', (e) => {
  const key = keyInput.value.trim();
  if (!key) { e.preventDefault(); return; }
  setKey(key);
  waitingForKey = null;
  renderAuthBox();
});

dialog.addEventListener('cancel', (e) => {
  // Without a key nothing works; keep the dialog up rather than show a page of errors.
  if (state.info?.auth_required && !getKey()) e.preventDefault();
});

let lastUnauthorized = 0;
window.addEventListener('uds:unauthorized', async (e) => {
  if (!state.info?.auth_required) {
    // A revoked or mistyped key: this server needs none, so sign out to the key-less view, and say so.
    if (getKey()) { setKey(''); renderAuthBox(); render(); toast('The server rejected the saved key; signed out.', 'error'); }
    return;
  }
  if (Date.now() - lastUnauthorized < 1000 || dialog.open) return;
  lastUnauthorized = Date.now();
  setKey('');
  renderAuthBox();
  await askForKey(`The server rejected the key${e.detail ? ` (${e.detail})` : ''}. Enter a valid API key.`);
  render();
});

// Signing in works on every server: where keys are optional (loopback) a key shows its tenant's jobs, e.g. those
// an `openai` client created with it; signing out goes back to the key-less tenant.
function renderAuthBox() {
  const box = document.getElementById('authbox');
  const key = getKey();
  const signIn = h('button', { type: 'button', class: 'link', id: 'sign-in', onclick: () => askForKey(state.info?.auth_required ? null : 'Sign in with an API key to see its jobs and datasets.').then(render) }, 'Sign in with a key');
  if (key) {
    clear(box, h('span', { class: 'small', title: 'Signed in with this API key' }, `key ${key.slice(0, 10)}…`), ' ',
      h('button', { type: 'button', class: 'link', id: 'sign-out', onclick: signOut }, 'Sign out'));
  } else if (!state.info?.auth_required) {
    clear(box, h('span', { class: 'muted small', title: 'This server does not require API keys (bound to localhost).' }, 'local · no key needed'), ' ', signIn);
  } else {
    clear(box, signIn);
  }
}

function signOut() {
  setKey('');
  renderAuthBox();
  if (state.info?.auth_required) askForKey('Signed out. Enter an API key.').then(render);
  else render();
}

async function start() {
  try {
    state.info = await get('/info');
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) state.info = { auth_required: true };
    else {
      showError(main, err);
      return;
    }
  }
  const footer = document.querySelector('.brand small');
  if (state.info.version) footer.title = `version ${state.info.version}`;
  renderAuthBox();
  await loadMethods();
  if (state.info.auth_required && !getKey()) await askForKey();
  window.addEventListener('hashchange', render);
  render();
}

window.addEventListener('unhandledrejection', (e) => {
  if (e.reason?.name === 'AbortError') return;
  toast(e.reason?.message || String(e.reason), 'error');
});

start();
