// Helpers shared by the pages: DOM building without innerHTML, the JSON API with RFC 7807
// problems, and formatting.

/** Creates an element; `props` sets properties (className, textContent…) and attributes (`attr:`). */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('attr:')) node.setAttribute(key.slice(5), value === true ? '' : String(value));
    else if (key.startsWith('on:')) node.addEventListener(key.slice(3), value);
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else node[key] = value;
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/**
 * The page's capability token, when it was opened from a link that carries one
 * (`/b/{id}?access_token=…`): a browser sends no Authorization header to EventSource or <img>,
 * so every request for this batch carries the token in its query instead.
 */
const accessToken = new URLSearchParams(globalThis.location?.search || '').get('access_token');

/** `url` with the page's capability token added, if there is one. */
export function withToken(url) {
  if (!accessToken) return url;
  const sep = url.includes('?') ? '&' : '?';
  return `${url}${sep}access_token=${encodeURIComponent(accessToken)}`;
}

/**
 * Where submit's batch routes are (status, cancel, retry). The relay serves this page; in the cloud
 * submit is another origin, which the relay names in `<meta name="assetgen-submit-url">` (and
 * submit allows the relay's origin by CORS). Empty: the page's own origin (`assetgen serve`).
 */
const submitBase = (globalThis.document?.querySelector('meta[name="assetgen-submit-url"]')?.content || '').replace(/\/+$/, '');

/** `path` (`/v1/batches/…`) on submit. */
export function submitUrl(path) {
  return `${submitBase}${path}`;
}

/** The answer of an API call: `ok` with `data`, or a `problem` (RFC 7807, or one made up locally). */
export async function api(method, path, { json, body, headers = {} } = {}) {
  const init = { method, headers: { Accept: 'application/json', ...headers } };
  if (json !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(json);
  } else if (body !== undefined) {
    init.body = body;
  }
  let response;
  try {
    response = await fetch(withToken(path), init);
  } catch (e) {
    return { ok: false, status: 0, problem: localProblem('The server could not be reached', String(e.message || e)) };
  }
  const type = response.headers.get('content-type') || '';
  let data = null;
  if (type.includes('json')) {
    try {
      data = await response.json();
    } catch {
      data = null;
    }
  }
  if (response.ok) return { ok: true, status: response.status, data };
  const problem = data && data.title ? data : localProblem(`HTTP ${response.status}`, response.statusText || '');
  return { ok: false, status: response.status, problem };
}

function localProblem(title, detail) {
  return { title, detail, code: 'NETWORK', advice: 'Check that the server is running, then try again.' };
}

/** One line a person can act on: what happened, and what to do. */
export function problemText(problem) {
  if (!problem) return '';
  const parts = [problem.title, problem.detail].filter(Boolean).join(': ');
  // A detail is often a sentence already: one full stop, not two.
  return problem.advice ? `${parts.replace(/\.\s*$/, '')}. ${problem.advice}` : parts;
}

export function formatUsd(x) {
  const v = Number(x) || 0;
  return `$${v.toFixed(v !== 0 && Math.abs(v) < 0.1 ? 3 : 2)}`;
}

/** `1h 02m`, `3m 05s`, `42s`. */
export function formatDuration(ms) {
  if (!Number.isFinite(ms) || ms < 0) return '—';
  const s = Math.round(ms / 1000);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  if (h > 0) return `${h}h ${String(m).padStart(2, '0')}m`;
  if (m > 0) return `${m}m ${String(sec).padStart(2, '0')}s`;
  return `${sec}s`;
}

export function formatBytes(n) {
  const v = Number(n) || 0;
  if (v < 1024) return `${v} B`;
  if (v < 1024 * 1024) return `${(v / 1024).toFixed(1)} KiB`;
  return `${(v / (1024 * 1024)).toFixed(2)} MiB`;
}

export function formatTime(date) {
  return date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

/** Copies text; falls back to a selected field where the Clipboard API is missing. */
export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    const field = el('textarea', { value: text, 'attr:readonly': true, className: 'visually-hidden' });
    document.body.append(field);
    field.select();
    let ok = false;
    try {
      ok = document.execCommand('copy');
    } catch {
      ok = false;
    }
    field.remove();
    return ok;
  }
}

/** A short-lived message in the page's polite live region. */
export function announce(text, kind = 'info') {
  const region = document.getElementById('toast');
  if (!region) return;
  region.dataset.kind = kind;
  region.textContent = text;
  region.hidden = false;
  clearTimeout(announce.timer);
  announce.timer = setTimeout(() => {
    region.hidden = true;
  }, 8000);
}
