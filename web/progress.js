// The progress page at /b/{batch_id}: header totals, one card per row, a gallery that fills in as
// images land (with a lightbox), an event log, Retry and Cancel, and a live connection indicator.

import { el, api, problemText, formatUsd, formatDuration, formatTime, announce, withToken, submitUrl } from './common.js';
import { BatchModel, label, formatPrice } from './progress-model.js';
import { LiveConnection } from './connection.js';
import { showProvenance } from './provenance-view.js';

const batchId = decodeURIComponent(location.pathname.split('/').filter(Boolean).pop() || '');
const model = new BatchModel(batchId);
const $ = (id) => document.getElementById(id);

const STATE_TEXT = {
  connecting: 'Connecting…',
  connected: 'Connected',
  reconnecting: 'Reconnecting…',
  finished: 'Finished',
  stopped: 'Disconnected',
};

/**
 * The owner's control token, when the page was opened from the Sheet or the CLI (`#control=…`,
 * from `POST /v1/batches/{id}/control-token`): Cancel and Retry send it as a bearer token; the
 * page link alone only reads. It leaves the address bar at once, so a copied URL is the read link
 * only, and stays in this tab's session storage, so a reload keeps it.
 */
const controlToken = takeControlToken();

function takeControlToken() {
  const key = `assetgen-control:${batchId}`;
  const fromFragment = new URLSearchParams(location.hash.slice(1)).get('control');
  if (fromFragment) {
    try {
      sessionStorage.setItem(key, fromFragment);
    } catch {
      // Storage may be off: the token still works until the page is reloaded.
    }
    history.replaceState(null, '', `${location.pathname}${location.search}`);
    return fromFragment;
  }
  try {
    return sessionStorage.getItem(key);
  } catch {
    return null;
  }
}

let connection = null;
let lightboxIndex = -1;
let lightboxOpener = null;
const cards = new Map(); // row → card element
const tiles = new Map(); // "row-variant" → tile element

function setConnection(state, detail = {}) {
  const box = $('connection');
  box.dataset.state = state;
  let text = STATE_TEXT[state] || state;
  if (state === 'reconnecting' && detail.retryInMs) {
    text += ` (next try in ${Math.max(1, Math.round(detail.retryInMs / 1000))} s)`;
  }
  $('connection-text').textContent = text;
  box.title = state === 'finished' ? 'The batch has ended; live updates stopped.' : '';
  if (state === 'reconnecting' || state === 'connected') {
    const last = model.log[0];
    const line = state === 'connected' ? 'connected' : `connection lost${detail.retryInMs ? `; retrying in ${formatDuration(detail.retryInMs)}` : '; reconnecting'}`;
    // One log line per change, not one per attempt.
    if (!last || last.kind !== 'connection' || last.text !== line) {
      model.addLog('connection', line);
      renderLog();
    }
  }
}

function onEvent(name, data, id) {
  model.apply(name, data, id);
  render();
  if (name === 'done') {
    connection.finish();
  }
}

function render() {
  renderHeader();
  renderRows();
  renderGallery();
  renderLog();
  renderButtons();
}

function renderHeader() {
  const s = model.summary();
  if (!s) return;
  const status = $('batch-status');
  status.textContent = label(s.status);
  status.dataset.status = s.status;
  $('batch-mode').textContent = `${label(s.runMode)} · ${s.model}`;
  const bulk = $('bulk-state');
  bulk.hidden = !s.bulkText;
  bulk.textContent = s.bulkText || '';
  bulk.dataset.state = s.bulkState || '';
  const parts = [`${s.succeeded} done`];
  if (s.running) parts.push(`${s.running} running`);
  if (s.queued) parts.push(`${s.queued} queued`);
  if (s.cancelled) parts.push(`${s.cancelled} cancelled`);
  $('stat-rows').textContent = `${s.rows} (${parts.join(', ')})`;
  $('stat-images').textContent = `${s.imagesDone} / ${s.imagesTotal}`;
  $('stat-failures').textContent = String(s.failures);
  $('stat-failures').classList.toggle('bad', s.failures > 0);
  const live = s.runMode === 'dry_run' ? ` (live: ${formatUsd(s.estimateIfLiveUsd)})` : '';
  $('stat-cost').textContent = `${formatUsd(s.costUsd)} of ${formatUsd(s.estimateUsd)} est.${live}`;
  $('cost-label').textContent = s.ended ? 'Cost' : 'Cost so far';
  $('stat-per-image').textContent = perImage(s);
  renderClock();
  const bar = $('progressbar');
  bar.setAttribute('aria-valuenow', String(s.percent));
  bar.dataset.status = s.status;
  $('progress-fill').style.width = `${s.percent}%`;
  document.title = `${s.percent}% · ${label(s.status)} · assetgen`;
}

function renderClock() {
  const s = model.summary();
  if (!s) return;
  const elapsed = $('stat-elapsed');
  $('clock-label').textContent = s.ended ? 'Duration' : 'Elapsed';
  elapsed.textContent = s.elapsedMs === null ? '—' : formatDuration(s.elapsedMs);
  elapsed.title = s.elapsedMs === null ? 'The batch ended before this page was opened' : '';
  let eta;
  if (model.terminal) eta = 'done';
  else if (s.etaMs === null) eta = 'estimating…';
  else eta = formatDuration(s.etaMs);
  $('stat-eta').textContent = eta;
}

/** `$0.039`; a dry run costs nothing, so it says what an image would cost live. */
function perImage(s) {
  if (s.runMode === 'dry_run') return s.livePerImageUsd === null ? '—' : `${formatUsd(0)} (live: ${formatUsd(s.livePerImageUsd)})`;
  if (s.runMode === 'bulk') {
    // Before the first image, the bulk price it will be charged; the live one beside it.
    const price = s.costPerImageUsd ?? s.bulkPerImageUsd;
    if (price === null) return '—';
    const live = s.livePerImageUsd === null ? '' : `, live ${formatPrice(s.livePerImageUsd)}`;
    return `${formatPrice(price)} (bulk price${live})`;
  }
  return s.costPerImageUsd === null ? '—' : formatUsd(s.costPerImageUsd);
}

function renderButtons() {
  const t = model.totals;
  $('retry').disabled = !t || t.failed === 0;
  $('cancel').disabled = !model.view || model.terminal || t.queued === 0;
}

function cardFor(r) {
  let card = cards.get(r.row);
  if (card) return card;
  card = el(
    'article',
    { className: 'card', 'attr:aria-labelledby': `row-${r.row}-title`, dataset: { row: String(r.row) } },
    el('header', {}, el('h3', { id: `row-${r.row}-title` }, r.scene_id), el('span', { className: 'badge row-status' })),
    el('p', { className: 'row-meta' }),
    el('div', { className: 'row-error', hidden: true }, el('p', { className: 'error-code' }), el('p', { className: 'error-detail' }), el('p', { className: 'advice' })),
    el('ul', { className: 'row-thumbs', 'attr:aria-label': `Images of ${r.scene_id}` }),
  );
  cards.set(r.row, card);
  return card;
}

function renderRows() {
  const box = $('rows');
  for (const r of model.sortedRows()) {
    const card = cardFor(r);
    card.dataset.status = r.status;
    const badge = card.querySelector('.row-status');
    badge.textContent = label(r.status);
    badge.dataset.status = r.status;
    const used = r.refs.filter((x) => x.outcome === 'used').length;
    const refs = used ? ` · ${used} ref${used === 1 ? '' : 's'}` : '';
    card.querySelector('.row-meta').textContent =
      `Row ${r.row + 1} · ${r.images.length}/${r.variants} images · attempts ${r.attempts}${refs}`;
    const err = card.querySelector('.row-error');
    err.hidden = !r.error;
    if (r.error) {
      err.querySelector('.error-code').textContent = r.error.code;
      err.querySelector('.error-detail').textContent = r.error.detail;
      err.querySelector('.advice').textContent = r.error.advice;
    }
    const thumbs = card.querySelector('.row-thumbs');
    if (thumbs.childElementCount !== r.images.length) {
      thumbs.replaceChildren(
        ...r.images.map((url, i) =>
          el('li', {}, el('img', { src: url, alt: `${r.scene_id} variant ${i + 1}`, loading: 'lazy', width: 48, height: 48 })),
        ),
      );
    }
    box.append(card); // keeps row order; existing cards are moved, not rebuilt
  }
}

function renderGallery() {
  const list = $('gallery');
  const wanted = model.gallery();
  const keep = new Set(wanted.map((t) => t.key));
  for (const [key, node] of tiles) {
    if (!keep.has(key)) {
      node.remove();
      tiles.delete(key);
    }
  }
  wanted.forEach((t, index) => {
    let node = tiles.get(t.key);
    const hasImage = Boolean(t.url);
    if (!node || (node.dataset.loaded === 'false' && hasImage)) {
      const fresh = hasImage ? imageTile(t) : placeholderTile(t);
      if (node) node.replaceWith(fresh);
      node = fresh;
      tiles.set(t.key, node);
    }
    node.dataset.index = String(index);
    list.append(node);
  });
  $('gallery-empty').hidden = wanted.length > 0;
}

function imageTile(t) {
  const caption = `${t.sceneId} · v${t.variant}`;
  return el(
    'li',
    { className: 'tile', dataset: { loaded: 'true', key: t.key } },
    el(
      'button',
      { type: 'button', className: 'tile-button', 'attr:aria-label': `Open ${t.sceneId} variant ${t.variant}`, 'on:click': (e) => openLightbox(t.key, e.currentTarget) },
      el('img', { src: t.url, alt: `${t.sceneId} variant ${t.variant}`, loading: 'lazy', decoding: 'async' }),
    ),
    el('span', { className: 'tile-caption' }, caption),
  );
}

function placeholderTile(t) {
  return el(
    'li',
    { className: 'tile pending', dataset: { loaded: 'false', key: t.key } },
    el('div', { className: 'tile-placeholder', 'attr:aria-label': `${t.sceneId} variant ${t.variant}: ${label(t.status)}`, 'attr:role': 'img' }, label(t.status)),
    el('span', { className: 'tile-caption' }, `${t.sceneId} · v${t.variant}`),
  );
}

function loadedTiles() {
  return model.gallery().filter((t) => t.url);
}

function openLightbox(key, opener) {
  const list = loadedTiles();
  lightboxIndex = list.findIndex((t) => t.key === key);
  if (lightboxIndex < 0) return;
  lightboxOpener = opener;
  showLightboxImage();
  const dialog = $('lightbox');
  if (!dialog.open) dialog.showModal();
  $('lightbox-close').focus();
}

function showLightboxImage() {
  const list = loadedTiles();
  const t = list[lightboxIndex];
  if (!t) return;
  const img = $('lightbox-img');
  img.src = withToken(t.url);
  img.alt = `${t.sceneId} variant ${t.variant}`;
  $('lightbox-caption').textContent = `${t.sceneId} · variant ${t.variant} (${lightboxIndex + 1} of ${list.length})`;
  const download = $('lightbox-download');
  download.href = withToken(t.url);
  download.setAttribute('download', `${t.sceneId}-v${t.variant}.png`);
  showProvenance($('lightbox-provenance'), t.provenance);
  $('lightbox-prev').disabled = lightboxIndex === 0;
  $('lightbox-next').disabled = lightboxIndex >= list.length - 1;
}

function stepLightbox(delta) {
  const list = loadedTiles();
  const next = lightboxIndex + delta;
  if (next < 0 || next >= list.length) return;
  lightboxIndex = next;
  showLightboxImage();
}

function setUpLightbox() {
  const dialog = $('lightbox');
  $('lightbox-close').addEventListener('click', () => dialog.close());
  $('lightbox-prev').addEventListener('click', () => stepLightbox(-1));
  $('lightbox-next').addEventListener('click', () => stepLightbox(1));
  // Escape closes a modal dialog by itself ("cancel"); arrows page through the images.
  dialog.addEventListener('keydown', (e) => {
    if (e.key === 'ArrowLeft') stepLightbox(-1);
    else if (e.key === 'ArrowRight') stepLightbox(1);
  });
  // A click on the backdrop (outside the figure and buttons) closes too.
  dialog.addEventListener('click', (e) => {
    if (e.target === dialog) dialog.close();
  });
  dialog.addEventListener('close', () => {
    if (lightboxOpener && lightboxOpener.isConnected) lightboxOpener.focus();
    lightboxOpener = null;
  });
}

function renderLog() {
  const list = $('log');
  list.replaceChildren(
    ...model.log.map((entry) =>
      el(
        'li',
        { dataset: { kind: entry.kind } },
        el('time', { dateTime: new Date(entry.at).toISOString() }, formatTime(new Date(entry.at))),
        el('span', { className: 'log-kind' }, entry.kind),
        entry.id !== null && entry.id !== undefined && entry.id !== '' ? el('span', { className: 'log-id' }, `#${entry.id}`) : null,
        el('span', { className: 'log-text' }, entry.text),
      ),
    ),
  );
}

async function control(action) {
  const button = $(action);
  button.disabled = true;
  const headers = controlToken ? { Authorization: `Bearer ${controlToken}` } : {};
  const result = await api('POST', submitUrl(`/v1/batches/${encodeURIComponent(batchId)}/${action}`), { headers });
  if (result.ok) {
    const n = result.data.rows.length;
    const what = action === 'retry' ? `${n} row${n === 1 ? '' : 's'} queued again` : `${n} row${n === 1 ? '' : 's'} cancelled`;
    model.addLog('action', `${action === 'retry' ? 'Retry' : 'Cancel'}: ${what}`);
    announce(what, 'ok');
    // After `done` the stream was closed: follow the batch again from the last event.
    if (action === 'retry' && n > 0) connection.resume();
  } else {
    model.addLog('action', `${action} refused: ${result.problem.code || result.status}`);
    announce(problemText(result.problem), 'error');
  }
  renderLog();
  renderButtons();
}

async function start() {
  $('batch-id').textContent = batchId;
  setUpLightbox();
  $('retry').addEventListener('click', () => control('retry'));
  $('cancel').addEventListener('click', () => control('cancel'));
  // A missing batch, or a link that no longer opens it (expired, or none: not signed in), is said
  // plainly, not retried forever.
  const first = await api('GET', submitUrl(`/v1/batches/${encodeURIComponent(batchId)}`));
  if (!first.ok && [401, 403, 404].includes(first.status)) {
    const box = $('load-error');
    box.textContent = problemText(first.problem);
    box.hidden = false;
    setConnection('stopped');
    const status = $('batch-status');
    status.textContent = first.status === 404 ? 'not found' : 'no access';
    status.dataset.status = first.status === 404 ? 'not_found' : 'no_access';
    return;
  }
  connection = new LiveConnection(withToken(`/v1/batches/${encodeURIComponent(batchId)}/events`), { onEvent, onState: setConnection });
  connection.start();
  setInterval(renderClock, 1000);
}

// For tests and the curious: the page's view of the batch.
window.assetgenProgress = {
  model,
  get connection() {
    return connection;
  },
};

start();
