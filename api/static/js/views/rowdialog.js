// A dialog that shows one dataset row in full (chat turns), fetched from /datasets/{id}/rows.
import { h, clear } from '../dom.js';
import { get } from '../api.js';

export function renderExample(r) {
  if (Array.isArray(r.messages)) {
    return h('div', { class: 'messages' }, r.messages.map((msg) => h('div', { class: `msg role-${msg.role}` },
      h('div', { class: 'msg-role' }, msg.role, msg.role === 'assistant' && msg.weight === 0 ? ' (not trained: weight 0)' : ''),
      h('pre', { class: 'msg-content' }, typeof msg.content === 'string' ? msg.content : JSON.stringify(msg.content, null, 2)))));
  }
  if (r.preview) return h('pre', { class: 'msg-content' }, r.preview);
  return h('pre', { class: 'msg-content' }, JSON.stringify(r, null, 2));
}

export async function showRow(datasetId, row) {
  let dialog = document.getElementById('row-dialog');
  if (!dialog) {
    dialog = h('dialog', { id: 'row-dialog', class: 'wide', 'aria-labelledby': 'row-dialog-title' });
    dialog.addEventListener('click', (e) => { if (e.target === dialog) dialog.close(); });
    document.body.append(dialog);
  }
  const body = h('div', { class: 'dialog-body' }, h('p', { class: 'loading' }, 'Loading…'));
  clear(dialog,
    h('div', { class: 'dialog-head' },
      h('h2', { id: 'row-dialog-title' }, `Row #${row}`),
      h('button', { type: 'button', class: 'secondary', onclick: () => dialog.close() }, 'Close')),
    body);
  dialog.showModal();
  try {
    const page = await get(`/datasets/${datasetId}/rows`, { offset: row, limit: 1 });
    const r = (page.data || [])[0];
    if (!r) { clear(body, h('p', { class: 'muted' }, 'This row is not in the dataset.')); return; }
    clear(body, r.line ? h('p', { class: 'muted small' }, `line ${r.line} of the uploaded file`) : null, renderExample(r));
  } catch (err) {
    clear(body, h('p', { class: 'error-text', role: 'alert' }, err.message));
  }
}
