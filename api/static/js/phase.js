// What a running job is doing (the job's `phase`), for the ETA cells: a final evaluation can take minutes after
// the last step, which a bare step count would show as "ETA 0 ms".
import { fmtDuration, isNum } from './dom.js';

const PHASE_TEXT = {
  loading: 'loading the model',
  training: 'training',
  evaluating: 'evaluating',
  saving: 'saving the adapter',
};

export function phaseText(job) {
  if (job.status !== 'running' || !job.phase) return null;
  const text = PHASE_TEXT[job.phase] || job.phase;
  if (job.phase === 'training' || !job.phase_started_at) return text;
  const since = (Date.now() - Date.parse(job.phase_started_at)) / 1000;
  return since >= 1 ? `${text} for ${fmtDuration(since)}` : text;
}

// The ETA cell's text: the estimate when there is one, else what the job is waiting on.
export function etaText(job) {
  if (isNum(job.eta_seconds)) return fmtDuration(job.eta_seconds);
  if (job.phase === 'evaluating') return 'evaluating… (first one: not yet measured)';
  if (job.phase && job.phase !== 'training') return `${PHASE_TEXT[job.phase] || job.phase}…`;
  return 'estimating…';
}
