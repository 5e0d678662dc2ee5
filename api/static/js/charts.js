// Line charts on the vendored uPlot (api/static/vendor/uplot-*/, MIT). One card = title + unit + canvas + empty state.
import { h, fmtNum } from './dom.js';

export const COLORS = ['#2563eb', '#dc2626', '#16a34a', '#9333ea', '#ea580c', '#0891b2', '#a16207', '#db2777'];

// Steps and example counts are whole numbers: no 1.5 ticks on those axes.
const INTEGER_INCRS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 2e5, 5e5, 1e6, 2e6, 5e6, 1e7];

const AXIS = { stroke: '#52606d', grid: { stroke: '#e4e7eb', width: 1 }, ticks: { stroke: '#cbd2d9', width: 1 } };

export class LineChart {
  /**
   * series: [{label, color, dash, width, fill, points}]; bands: [[upperIndex, lowerIndex, fill]] (1-based series indexes)
   * yFormat: number -> string for the axis and legend; xLabel: x axis title.
   */
  constructor({ id, title, unit, note, series, bands = [], xLabel = 'step', xInteger = true, yFormat = (v) => fmtNum(v, 3), xFormat, height = 220, empty = 'No data yet.' }) {
    this.xInteger = xInteger;
    this.series = series;
    this.height = height;
    this.emptyText = empty;
    this.xLabel = xLabel;
    this.yFormat = yFormat;
    this.xFormat = xFormat || ((v) => fmtNum(v, 4));
    this.bands = bands;
    this.plotEl = h('div', { class: 'plot' });
    this.emptyEl = h('p', { class: 'chart-empty' }, empty);
    this.noteEl = h('p', { class: 'chart-note' }, note || '');
    this.noteEl.hidden = !note;
    this.el = h('figure', { class: 'chart', id: id ? `chart-${id}` : null, 'data-chart': id || '', 'data-points': '0' },
      h('figcaption', null, h('span', { class: 'chart-title' }, title), unit ? h('span', { class: 'chart-unit' }, unit) : null),
      this.plotEl, this.emptyEl, this.noteEl);
    this.data = [[], ...series.map(() => [])];
    this.plot = null;
    this.resizer = new ResizeObserver(() => this.resize());
    this.resizer.observe(this.plotEl);
  }

  setNote(text) {
    this.noteEl.textContent = text || '';
    this.noteEl.hidden = !text;
  }

  setEmptyText(text) {
    this.emptyText = text;
    this.emptyEl.textContent = text;
  }

  width() {
    return Math.max(200, Math.floor(this.plotEl.clientWidth || this.el.clientWidth || 300));
  }

  build() {
    if (!window.uPlot) return; // script still loading; setData retries on the next call
    const yFormat = this.yFormat;
    const xFormat = this.xFormat;
    const opts = {
      width: this.width(),
      height: this.height,
      scales: { x: { time: false } },
      legend: { live: true },
      cursor: { drag: { x: true, y: false }, points: { size: 7 } },
      axes: [
        { ...AXIS, label: this.xLabel, labelSize: 18, incrs: this.xInteger ? INTEGER_INCRS : undefined, values: (u, vals) => vals.map((v) => xFormat(v)) },
        { ...AXIS, size: 58, values: (u, vals) => vals.map((v) => yFormat(v)) },
      ],
      series: [
        { label: this.xLabel, value: (u, v, si, i) => legendValue(u, v, si, i, xFormat) },
        ...this.series.map((s) => ({
          label: s.label,
          stroke: s.color,
          width: s.width ?? 2,
          dash: s.dash,
          fill: s.fill,
          spanGaps: true,
          points: s.points ? { show: true, size: 6, fill: s.color } : undefined,
          value: (u, v, si, i) => legendValue(u, v, si, i, yFormat),
        })),
      ],
      bands: this.bands.map(([a, b, fill]) => ({ series: [a, b], fill })),
    };
    this.plot = new window.uPlot(opts, this.data, this.plotEl);
  }

  resize() {
    if (this.plot) this.plot.setSize({ width: this.width(), height: this.height });
  }

  /** data: [xs, ys1, ys2, ...] aligned arrays (null = no value at that x). */
  setData(data) {
    this.data = data;
    const points = data[0].length;
    const hasValues = data.slice(1).some((ys) => ys.some((v) => v !== null && v !== undefined));
    this.el.dataset.points = String(hasValues ? points : 0);
    this.emptyEl.hidden = hasValues;
    this.plotEl.classList.toggle('is-empty', !hasValues);
    if (!this.plot) this.build();
    else this.plot.setData(data);
  }

  destroy() {
    this.resizer.disconnect();
    if (this.plot) this.plot.destroy();
    this.plot = null;
  }
}

// With the cursor off the chart the legend shows the latest values instead of dashes.
function legendValue(u, v, si, i, fmt) {
  if (i === null || i === undefined) {
    const col = u.data[si] || [];
    v = null;
    for (let k = col.length - 1; k >= 0; k--) if (col[k] !== null && col[k] !== undefined) { v = col[k]; break; }
  }
  return v === null || v === undefined ? '—' : fmt(v);
}

/** Aligns several (xs, ys) tables on the union of their x values, filling gaps with null. */
export function alignSeries(tables) {
  const xs = Array.from(new Set(tables.flatMap(([x]) => x))).sort((a, b) => a - b);
  const index = new Map(xs.map((x, i) => [x, i]));
  const out = [xs];
  for (const [x, y] of tables) {
    const col = new Array(xs.length).fill(null);
    x.forEach((xv, i) => { col[index.get(xv)] = y[i] ?? null; });
    out.push(col);
  }
  return out;
}
