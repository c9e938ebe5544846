// The reference manager at /refs: upload or fetch references, see them with their SHA-256 and
// duplicates flagged, copy a reference's stable URL, and tag a set as the global references.

import { el, api as callApi, problemText, formatBytes, copyText, announce } from './common.js';

const MAX_SET = 6;
const $ = (id) => document.getElementById(id);

/**
 * The reference manager token, when the page was opened from the Sheet or the CLI (`#token=…`,
 * from `POST /v1/refs/manager-token`): a browser has no Google ID token, so every library call
 * sends this one as a bearer token instead. It opens the reference library only, for an hour. It
 * leaves the address bar at once, so a copied URL never carries it, and stays in this tab's
 * session storage, so a reload keeps it.
 */
const TOKEN_KEY = 'assetgen-refs-token';
const managerToken = takeManagerToken();

function takeManagerToken() {
  const fromFragment = new URLSearchParams(location.hash.slice(1)).get('token');
  if (fromFragment) {
    try {
      sessionStorage.setItem(TOKEN_KEY, fromFragment);
    } catch {
      // Storage may be off: the token still works until the page is reloaded.
    }
    history.replaceState(null, '', `${location.pathname}${location.search}`);
    return fromFragment;
  }
  try {
    return sessionStorage.getItem(TOKEN_KEY);
  } catch {
    return null;
  }
}

/** A library call, with the manager token when there is one; a refused sign-in ends the page. */
async function api(method, path, options = {}) {
  const headers = managerToken ? { Authorization: `Bearer ${managerToken}` } : {};
  const result = await callApi(method, path, { ...options, headers });
  if (!result.ok && (result.status === 401 || result.status === 403)) showSignIn(result.problem);
  return result;
}

/**
 * Instead of a page whose every button fails: what is missing, and where to get it. Under OIDC the
 * page can only be used as opened from the Sheet or the CLI, which sign it in.
 */
function showSignIn(problem) {
  if (!$('sign-in').hidden) return;
  $('manager').hidden = true;
  $('sign-in-title').textContent = managerToken ? 'This link no longer signs you in' : 'Sign in to manage references';
  // The server's detail says why this token is refused (expired, not valid here, not allowed).
  $('sign-in-detail').textContent = managerToken
    ? problem?.detail || problemText(problem)
    : 'The reference library belongs to this deployment, so this page needs to know who you are.';
  $('sign-in').hidden = false;
  $('sign-in').focus();
}

let library = []; // RefSummary[], newest first
let selection = []; // URLs of the global set being edited, in order
const seenThisVisit = new Map(); // sha256 → how many times it was added on this page

function shaOf(url) {
  const m = /\/v1\/refs\/([0-9a-f]{64})(?:[?#].*)?$/.exec(url);
  return m ? m[1] : null;
}

function isSelected(sha) {
  return selection.some((u) => shaOf(u) === sha);
}

function copyButton(url) {
  return el(
    'button',
    {
      type: 'button',
      className: 'small copy-url',
      'attr:aria-label': 'Copy the stable URL',
      'on:click': async (e) => {
        const button = e.currentTarget; // null once the handler awaits
        const ok = await copyText(url);
        button.textContent = ok ? 'Copied' : 'Copy failed';
        announce(ok ? `Copied ${url}` : `Could not copy; the URL is ${url}`, ok ? 'ok' : 'error');
        setTimeout(() => {
          button.textContent = 'Copy URL';
        }, 2000);
      },
    },
    'Copy URL',
  );
}

/** A card for a reference just added (or an error card for one that was refused). */
function addedCard(name, result) {
  if (!result.ok) {
    return el(
      'li',
      { className: 'ref-card error-card', dataset: { state: 'error' } },
      el(
        'div',
        { className: 'ref-body' },
        el('span', { className: 'name', title: name }, name),
        el('span', { className: 'badge tag-dup' }, result.problem.code || 'ERROR'),
        el('p', { className: 'error' }, problemText(result.problem)),
      ),
    );
  }
  const r = result.data;
  const count = (seenThisVisit.get(r.sha256) || 0) + 1;
  seenThisVisit.set(r.sha256, count);
  const duplicate = r.duplicate || count > 1;
  return el(
    'li',
    { className: 'ref-card', dataset: { sha256: r.sha256, duplicate: String(duplicate), state: 'stored' } },
    el('img', { src: r.url, alt: `Preview of ${name}`, loading: 'lazy' }),
    el(
      'div',
      { className: 'ref-body' },
      el('span', { className: 'name', title: name }, name),
      el(
        'div',
        { className: 'ref-tags' },
        duplicate
          ? el('span', { className: 'badge tag-dup', title: 'The same bytes are already in the library' }, 'duplicate')
          : el('span', { className: 'badge tag-new' }, 'new'),
        el('span', { className: 'hint' }, `${r.mime_type} · ${formatBytes(r.bytes)}`),
      ),
      el('span', { className: 'sha', title: 'SHA-256' }, `sha256 ${r.sha256}`),
      el('div', { className: 'ref-actions' }, copyButton(r.url)),
    ),
  );
}

function showAdded(card) {
  $('added-title').hidden = false;
  $('added').prepend(card);
}

async function uploadFiles(files) {
  const images = [...files];
  if (images.length === 0) return;
  for (const file of images) {
    const form = new FormData();
    form.append('file', file, file.name);
    const result = await api('POST', '/v1/refs', { body: form });
    showAdded(addedCard(file.name, result));
  }
  await loadLibrary();
  announce(`${images.length} file${images.length === 1 ? '' : 's'} processed`, 'ok');
}

async function fetchUrls(event) {
  event.preventDefault();
  const urls = $('urls')
    .value.split(/\s+/)
    .map((u) => u.trim())
    .filter(Boolean);
  if (urls.length === 0) {
    announce('Paste at least one URL.', 'error');
    return;
  }
  const button = $('fetch');
  button.disabled = true;
  for (const url of urls) {
    const result = await api('POST', '/v1/refs/fetch', { json: { url } });
    showAdded(addedCard(url, result));
  }
  button.disabled = false;
  $('urls').value = '';
  await loadLibrary();
}

function libraryCard(r) {
  const id = `pick-${r.sha256}`;
  const checkbox = el('input', {
    type: 'checkbox',
    id,
    checked: isSelected(r.sha256),
    'on:change': (e) => toggle(r, e.currentTarget),
  });
  return el(
    'li',
    { className: 'ref-card', dataset: { sha256: r.sha256 } },
    el('img', { src: r.url, alt: `Reference ${r.sha256.slice(0, 12)}`, loading: 'lazy' }),
    el(
      'div',
      { className: 'ref-body' },
      el('div', { className: 'ref-tags' }, isSelected(r.sha256) ? el('span', { className: 'badge tag-global' }, 'global') : null, el('span', { className: 'hint' }, formatBytes(r.bytes))),
      el('span', { className: 'sha', title: r.sha256 }, `sha256 ${r.sha256}`),
      el('div', { className: 'ref-actions' }, el('label', { className: 'check', htmlFor: id }, checkbox, 'Global'), copyButton(r.url)),
    ),
  );
}

function toggle(r, checkbox) {
  if (checkbox.checked) {
    if (selection.length >= MAX_SET) {
      checkbox.checked = false;
      announce(`At most ${MAX_SET} global references are used; untick one first.`, 'error');
      return;
    }
    selection.push(r.url);
  } else {
    selection = selection.filter((u) => shaOf(u) !== r.sha256);
  }
  $('save-set').textContent = `Save selection as global refs (${selection.length})`;
}

function renderLibrary() {
  $('library').replaceChildren(...library.map(libraryCard));
  $('library-count').textContent = library.length ? `(${library.length})` : '(empty: add references above)';
}

async function loadLibrary() {
  const result = await api('GET', '/v1/refs');
  if (!result.ok) {
    if ($('sign-in').hidden) announce(problemText(result.problem), 'error');
    return;
  }
  library = result.data.refs;
  renderLibrary();
}

function renderSet(set) {
  const meta = $('set-meta');
  if (set.revision === 0) {
    meta.textContent = 'No global references yet.';
  } else {
    const when = set.updated_at ? new Date(set.updated_at).toLocaleString() : '';
    meta.textContent = `Revision ${set.revision}, saved ${when}${set.updated_by ? ` by ${set.updated_by}` : ''}: ${set.refs.length} reference${set.refs.length === 1 ? '' : 's'}.`;
  }
  $('set-list').replaceChildren(...set.refs.map((u) => el('li', {}, el('code', {}, u))));
  $('save-set').textContent = `Save selection as global refs (${selection.length})`;
}

async function loadSet() {
  const result = await api('GET', '/v1/refs/sets/global');
  if (!result.ok) {
    $('set-meta').textContent = problemText(result.problem);
    return;
  }
  selection = [...result.data.refs];
  renderSet(result.data);
}

async function saveSet() {
  const button = $('save-set');
  button.disabled = true;
  const result = await api('PUT', '/v1/refs/sets/global', { json: { refs: selection } });
  button.disabled = false;
  if (!result.ok) {
    announce(problemText(result.problem), 'error');
    return;
  }
  selection = [...result.data.refs];
  renderSet(result.data);
  renderLibrary();
  announce(`Saved: ${result.data.refs.length} global reference${result.data.refs.length === 1 ? '' : 's'}.`, 'ok');
}

function setUpDropzone() {
  const zone = $('dropzone');
  const input = $('file-input');
  $('choose').addEventListener('click', () => input.click());
  input.addEventListener('change', async () => {
    await uploadFiles(input.files);
    input.value = '';
  });
  zone.addEventListener('dragover', (e) => {
    e.preventDefault();
    zone.classList.add('over');
  });
  zone.addEventListener('dragleave', () => zone.classList.remove('over'));
  zone.addEventListener('drop', (e) => {
    e.preventDefault();
    zone.classList.remove('over');
    uploadFiles(e.dataTransfer.files);
  });
}

async function start() {
  setUpDropzone();
  $('url-form').addEventListener('submit', fetchUrls);
  $('save-set').addEventListener('click', saveSet);
  $('reload').addEventListener('click', async () => {
    await loadSet();
    await loadLibrary();
  });
  await loadSet();
  if ($('sign-in').hidden) await loadLibrary();
  document.body.dataset.ready = 'true';
}

start();
