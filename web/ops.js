// The operations page: polls /metrics-lite and draws the last hour as three bar charts (SVG built
// with DOM calls, no library), with the headline numbers above them.

import { el, formatUsd, formatTime } from './common.js';
import { opsView, formatPercent } from './ops-model.js';

const SVG = 'http://www.w3.org/2000/svg';
const WIDTH = 360;
const HEIGHT = 100;
const params = new URLSearchParams(location.search);
// Tests poll faster; people need no more than every few seconds.
const every = Math.max(250, Number(params.get('every')) || 5000);

function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}

/** Redraws the bars of `figure` for `values` (null: no data that minute), labelled by `format`. */
function drawChart(figure, values, minutes, format) {
  const present = values.filter((v) => v !== null && v !== undefined);
  const max = Math.max(0, ...present);
  const top = max > 0 ? max : 1;
  const chart = svg('svg', { viewBox: `0 0 ${WIDTH} ${HEIGHT + 18}`, role: 'img', class: 'bars' });
  const slot = WIDTH / Math.max(1, values.length);
  values.forEach((v, i) => {
    if (v === null || v === undefined) return;
    const h = v > 0 ? Math.max(1.5, (v / top) * HEIGHT) : 0;
    const bar = svg('rect', { x: i * slot + 1, y: HEIGHT - h, width: Math.max(1, slot - 2), height: h, class: 'bar' });
    const title = svg('title');
    title.textContent = `${minutes[i] ? formatTime(minutes[i]) : ''}: ${format(v)}`;
    bar.append(title);
    chart.append(bar);
  });
  chart.append(svg('line', { x1: 0, y1: HEIGHT + 0.5, x2: WIDTH, y2: HEIGHT + 0.5, class: 'axis' }));
  if (minutes.length) {
    const first = svg('text', { x: 0, y: HEIGHT + 14, class: 'tick' });
    first.textContent = formatTime(minutes[0]).slice(0, 5);
    const last = svg('text', { x: WIDTH, y: HEIGHT + 14, class: 'tick', 'text-anchor': 'end' });
    last.textContent = 'now';
    chart.append(first, last);
  }
  const description = `${figure.querySelector('strong').textContent}: highest ${format(max)}, latest ${format(values.at(-1) ?? 0)}`;
  chart.setAttribute('aria-label', description);
  figure.querySelector('[data-role="peak"]').textContent = `peak ${format(max)}`;
  figure.querySelector('svg')?.remove();
  figure.append(chart);
}

function setText(id, text) {
  document.getElementById(id).textContent = text;
}

function render(view) {
  setText('stat-images-minute', String(view.imagesThisMinute));
  setText('stat-images-hour', String(view.imagesLastHour));
  setText('stat-429', `${formatPercent(view.rate429LastHour)} (${view.rateLimitedLastHour} of ${view.callsLastHour})`);
  setText('stat-spend', `${formatUsd(view.spendLastHour)} / h`);
  setText('stat-queue', view.queuePending === null ? 'n/a' : String(view.queuePending));
  setText('stat-latency', view.meanModelSeconds === null ? '—' : `${view.meanModelSeconds.toFixed(2)} s`);
  drawChart(document.getElementById('chart-images'), view.images, view.minutes, (v) => String(v));
  drawChart(document.getElementById('chart-429'), view.rate429, view.minutes, formatPercent);
  drawChart(document.getElementById('chart-spend'), view.spent, view.minutes, formatUsd);
  const rows = Object.entries(view.totals).map(([name, total]) =>
    el('tr', {}, el('td', {}, el('code', { textContent: name })), el('td', { textContent: String(total) })));
  document.getElementById('totals').replaceChildren(...rows);
  setText('updated', `Updated ${formatTime(new Date())}.`);
}

function connection(state, text) {
  const box = document.getElementById('connection');
  box.dataset.state = state;
  setText('connection-text', text);
}

async function refresh() {
  try {
    const response = await fetch('/metrics-lite', { headers: { Accept: 'application/json' } });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    render(opsView(await response.json()));
    connection('connected', 'Live');
  } catch (e) {
    connection('reconnecting', `Cannot read metrics (${e.message || e}); trying again`);
  }
}

refresh();
setInterval(refresh, every);
