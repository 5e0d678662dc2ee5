// A succeeded job's export menu: ask for a merged folder or a GGUF file (llama.cpp, Ollama), watch it being built,
// download it with its sha256. One element, built once and re-attached by the job head on every refresh.
import { h, clear, toast, fmtBytes } from '../dom.js';
import { get, post, download, url } from '../api.js';

const POLL_MS = 2000;
export const EXPORT_CHOICES = [
  { body: { kind: 'merged' }, label: 'Merged model (transformers, .tar.gz)', hint: 'base + adapter in one folder' },
  { body: { kind: 'gguf', quantization: 'f16' }, label: 'GGUF f16 (llama.cpp, Ollama)', hint: 'half of float32, same answers' },
  { body: { kind: 'gguf', quantization: 'q8_0' }, label: 'GGUF q8_0', hint: 'about a quarter of float32' },
  { body: { kind: 'gguf', quantization: 'f32' }, label: 'GGUF f32', hint: 'the merged weights exactly' },
];

function exportLabel(e) {
  return e.kind === 'gguf' ? `GGUF ${e.quantization}` : 'Merged';
}

export function exportsMenu(job, ctx) {
  let exports = [];
  let timer = null;
  let stopped = false;
  const list = h('ul', { class: 'export-list', id: 'export-list', 'aria-live': 'polite' });
  const menu = h('details', { class: 'menu', id: 'export-menu' },
    h('summary', { class: 'button secondary' }, 'Export…'),
    h('div', { class: 'menu-body' },
      h('div', { class: 'menu-choices' }, EXPORT_CHOICES.map((c) => h('button', {
        type: 'button', class: 'menu-item', dataset: { export: c.body.quantization || c.body.kind },
        onclick: () => ask(c.body),
      }, h('span', null, c.label), h('span', { class: 'muted small' }, c.hint)))),
      h('p', { class: 'small muted' }, 'GGUF: a .tar with the .gguf file and an Ollama Modelfile; ',
        h('code', null, 'tar xf FILE.tar && cd gguf && ollama create NAME -f Modelfile'), '.'),
      list));

  async function ask(body) {
    try {
      const e = await post(`/jobs/${job.id}/exports`, body);
      toast(`${exportLabel(e)} export ${e.status === 'succeeded' ? 'is ready' : 'requested: built by a worker'}.`);
      await refresh();
    } catch (err) {
      toast(err.message, 'error');
    }
  }

  function row(e) {
    const path = `/exports/${e.id}/content`;
    const name = e.kind === 'gguf' ? `${job.id}-gguf-${e.quantization}.tar` : `${job.id}-merged.tar.gz`;
    const status = e.status === 'failed' ? `failed: ${e.error?.message || e.error?.code || ''}` : e.status;
    let action = null;
    if (e.status === 'succeeded') {
      action = ctx.info?.auth_required
        ? h('button', { type: 'button', class: 'link', onclick: () => download(path, name).catch((err) => toast(err.message, 'error')) }, `Download (${fmtBytes(e.bytes)})`)
        : h('a', { href: url(path), download: name }, `Download (${fmtBytes(e.bytes)})`);
    } else if (e.status === 'queued' || e.status === 'running') {
      action = h('button', {
        type: 'button', class: 'link', onclick: () => post(`/exports/${e.id}/cancel`, {}).then(refresh).catch((err) => toast(err.message, 'error')),
      }, e.cancel_requested ? 'cancelling…' : 'Cancel');
    }
    return h('li', { class: 'export-row', dataset: { status: e.status, export: e.quantization || e.kind } },
      h('strong', null, exportLabel(e)), ' ', h('span', { class: 'muted small' }, status), ' ', action,
      e.sha256 ? h('div', { class: 'mono small', title: e.sha256 }, `sha256 ${e.sha256}`) : null);
  }

  async function refresh() {
    clearTimeout(timer);
    try {
      exports = (await get(`/jobs/${job.id}/exports`)).data || [];
    } catch (err) {
      console.warn('exports refresh failed', err);
    }
    if (stopped) return;
    clear(list, exports.length ? exports.map(row) : h('li', { class: 'muted small' }, 'No exports yet.'));
    if (exports.some((e) => e.status === 'queued' || e.status === 'running')) timer = setTimeout(refresh, POLL_MS);
  }

  menu.addEventListener('toggle', () => { if (menu.open) refresh(); });
  refresh();
  return { el: menu, stop() { stopped = true; clearTimeout(timer); } };
}
