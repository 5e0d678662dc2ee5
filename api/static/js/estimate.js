// What a job would cost before it starts: POST /api/v1/jobs/estimate, asked again whenever typing pauses.
import { h, clear, fmtInt, fmtBytes, fmtDuration, isNum } from './dom.js';
import { post } from './api.js';

export const ESTIMATE_DELAY_MS = 400;

// A function to call on every change: once changes pause for `delay` ms, `compute()` (a promise of what to show,
// or null for nothing) runs and its result replaces `box`'s content; an answer overtaken by a newer change is dropped.
export function debounced(box, compute, delay = ESTIMATE_DELAY_MS) {
  let timer = null;
  let latest = 0;
  return () => {
    clearTimeout(timer);
    const mine = ++latest;
    timer = setTimeout(async () => {
      let shown;
      try {
        shown = await compute();
      } catch (err) {
        shown = h('span', { class: 'muted' }, `No estimate: ${err.message}`);
      }
      if (mine === latest) clear(box, shown ?? '');
    }, delay);
  };
}

export function fetchEstimate(body) {
  return post('/jobs/estimate', body);
}

// "≈ 3 min 10 s (measured on 4 jobs, cpu)" or why there is no time.
export function timeText(time) {
  if (!isNum(time?.seconds)) return `unknown: ${time?.reason || 'no measurement yet'} for this model and method`;
  const jobs = `${time.based_on} finished job${time.based_on === 1 ? '' : 's'}`;
  return `≈ ${fmtDuration(time.seconds)} (speed measured on ${jobs}${time.device_kind ? `, ${time.device_kind}` : ''})`;
}

export function memoryText(memory) {
  if (!memory) return null;
  return `peak memory ≈ ${Object.entries(memory).map(([device, parts]) => `${fmtBytes(parts.peak)} on ${device}`).join(', ')}`;
}

// One job's estimate, in a line.
export function estimateLine(est) {
  const tokens = `${est.tokens_exact ? '' : '≈ '}${fmtInt(est.tokens_trained)} tokens trained`;
  return h('span', { class: 'server-estimate', 'data-seconds': isNum(est.time?.seconds) ? String(est.time.seconds) : '' },
    h('strong', null, `Time ${timeText(est.time)}`), ` · ${tokens}`,
    est.memory ? ` · ${memoryText(est.memory)}` : '');
}
