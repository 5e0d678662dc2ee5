// The job page's "Try it" tab: a prompt (or a chat) answered by the base model with this job's adapter and
// without it, side by side. POST /jobs/{id}/generate, then GET /generations/{id} until it ends; Cancel asks
// POST /generations/{id}/cancel (the worker stops between tokens). The model runs on a worker, never here.
import { h, clear, fmtInt } from '../dom.js';
import { get, post } from '../api.js';

const POLL_MS = 500;
const DONE = new Set(['succeeded', 'failed', 'cancelled']);
const ROLES = ['system', 'user', 'assistant'];

export function tryItPanel(root, job) {
  let mode = 'prompt';
  let generation = null;
  let timer = null;
  let stopped = false;

  const prompt = h('textarea', { id: 'tryit-prompt', rows: 4, placeholder: 'Ask the fine-tuned model something…' });
  const turns = h('div', { id: 'tryit-turns' });
  const maxTokens = h('input', { id: 'tryit-max-tokens', type: 'number', min: 1, value: 64 });
  const temperature = h('input', { id: 'tryit-temperature', type: 'number', min: 0, max: 2, step: 0.1, value: 0 });
  const generateBtn = h('button', { type: 'submit', class: 'primary', id: 'tryit-generate' }, 'Generate');
  const cancelBtn = h('button', { type: 'button', id: 'tryit-cancel', hidden: true, onclick: cancel }, 'Cancel');
  const status = h('p', { id: 'tryit-status', class: 'muted', 'aria-live': 'polite' });
  const errorBox = h('div', { id: 'tryit-error', class: 'form-error', role: 'alert', hidden: true });
  const answers = h('div', { class: 'grid-2', id: 'tryit-answers' });
  const promptPane = h('div', { class: 'field' }, h('label', { for: 'tryit-prompt' }, 'Prompt'), prompt);
  const chatPane = h('div', { class: 'field', hidden: true }, h('span', null, 'Conversation (the answer follows the last turn)'),
    turns, h('button', { type: 'button', id: 'tryit-add-turn', onclick: () => addTurn(nextRole()) }, 'Add turn'));

  function modeRadio(value, label) {
    return h('label', { class: 'inline' }, h('input', {
      type: 'radio', name: 'tryit-mode', value, checked: value === mode,
      onchange: () => { mode = value; promptPane.hidden = mode !== 'prompt'; chatPane.hidden = mode !== 'chat'; },
    }), label);
  }

  function addTurn(role = 'user', content = '') {
    const select = h('select', { 'aria-label': 'Role' }, ...ROLES.map((r) => h('option', { value: r, selected: r === role }, r)));
    const text = h('textarea', { rows: 2, 'aria-label': 'Message' }, content);
    const row = h('div', { class: 'tryit-turn' }, select, text,
      h('button', { type: 'button', 'aria-label': 'Remove turn', onclick: () => row.remove() }, '×'));
    turns.append(row);
  }

  function nextRole() {
    const last = turns.lastElementChild?.querySelector('select')?.value;
    return last === 'user' ? 'assistant' : 'user';
  }

  function chatMessages() {
    return [...turns.children].map((row) => ({
      role: row.querySelector('select').value, content: row.querySelector('textarea').value,
    })).filter((m) => m.content.trim() !== '');
  }

  function answerPane(title, id, answer) {
    const body = answer
      ? [h('pre', { class: 'tryit-text' }, answer.text || '(empty answer)'),
        h('p', { class: 'hint' }, `${fmtInt(answer.tokens)} tokens in ${answer.seconds.toFixed(2)} s`)]
      : [h('p', { class: 'muted' }, generation && !DONE.has(generation.status) ? 'Waiting for the worker…' : '—')];
    return h('section', { class: 'panel', id }, h('h3', null, title), ...body);
  }

  function render() {
    const g = generation;
    const running = g && !DONE.has(g.status);
    generateBtn.disabled = Boolean(running);
    cancelBtn.hidden = !running;
    status.dataset.status = g ? g.status : '';
    status.dataset.id = g ? g.id : '';
    status.textContent = !g ? '' : {
      queued: 'Queued: waiting for a worker.', running: 'Generating…', succeeded: 'Done.',
      cancelled: 'Cancelled (partial answers kept).', failed: `Failed: ${g.error?.message || 'unknown error'}`,
    }[g.status] || g.status;
    clear(answers,
      answerPane('Fine-tuned (base + this adapter)', 'tryit-fine-tuned', g?.fine_tuned),
      answerPane(`Base model (${job.model})`, 'tryit-base', g?.base));
  }

  function showError(err) {
    errorBox.hidden = !err;
    errorBox.textContent = err ? err.message : '';
  }

  async function poll() {
    if (stopped || !generation) return;
    try {
      generation = await get(`/generations/${generation.id}`);
      render();
    } catch (err) {
      showError(err);
    }
    if (!stopped && generation && !DONE.has(generation.status)) timer = setTimeout(poll, POLL_MS);
  }

  async function submit(e) {
    e.preventDefault();
    showError(null);
    const body = { max_new_tokens: Number(maxTokens.value), temperature: Number(temperature.value) };
    if (mode === 'prompt') body.prompt = prompt.value;
    else body.messages = chatMessages();
    try {
      generation = await post(`/jobs/${job.id}/generate`, body);
      render();
      clearTimeout(timer);
      timer = setTimeout(poll, POLL_MS);
    } catch (err) {
      showError(err); // 400 naming the field, 409 for an unfinished job, 429 when too many are running
    }
  }

  async function cancel() {
    if (!generation) return;
    try {
      generation = await post(`/generations/${generation.id}/cancel`);
      render();
    } catch (err) {
      showError(err);
    }
  }

  addTurn('user');
  const notice = job.status === 'succeeded' ? null
    : h('p', { class: 'hint', id: 'tryit-unavailable' }, `Try it works once the job has succeeded; it is ${job.status}.`);
  clear(root, h('section', { class: 'panel' },
    h('h2', null, 'Try it'),
    h('p', { class: 'hint' }, 'The base model answers with this job\'s adapter and without it, on a worker, so you can compare.'),
    notice,
    h('form', { id: 'tryit-form', onsubmit: submit },
      h('div', { class: 'field', role: 'radiogroup', 'aria-label': 'Input' }, h('span', null, modeRadio('prompt', 'Prompt'), ' ', modeRadio('chat', 'Chat'))),
      promptPane, chatPane,
      h('div', { class: 'grid-2' },
        h('div', { class: 'field' }, h('label', { for: 'tryit-max-tokens' }, 'Max new tokens'), maxTokens),
        h('div', { class: 'field' }, h('label', { for: 'tryit-temperature' }, 'Temperature (0 = greedy)'), temperature)),
      errorBox,
      h('div', { class: 'actions' }, generateBtn, ' ', cancelBtn)),
    status),
  answers);
  render();

  return {
    stop() { stopped = true; clearTimeout(timer); },
  };
}
