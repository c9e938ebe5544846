// The lightbox's provenance panel: how the image on show was made, from its sidecar
// (`GET /v1/provenance/{batch}/{scene}/{variant}`, opened by the image link's own signature):
// the prompt as sent, the references and what became of each, the model, its version and the
// response id, the price and the spend event, who asked, when, and which attempt.

import { el, api, problemText, formatUsd } from './common.js';

const OUTCOME_TEXT = { used: 'used', duplicate: 'duplicate', dropped_over_cap: 'dropped (over the cap of 6)' };

let shown = 0; // the latest request: an older answer that arrives late is dropped

/** Fetches `url` and fills `panel` with it; a missing link or a refusal says so in the panel. */
export async function showProvenance(panel, url) {
  const ticket = ++shown;
  if (!url) {
    panel.replaceChildren(el('p', { className: 'hint' }, 'No provenance link for this image.'));
    return;
  }
  panel.dataset.state = 'loading';
  panel.replaceChildren(el('p', { className: 'hint' }, 'Loading how this image was made…'));
  const answer = await api('GET', url);
  if (ticket !== shown) return;
  if (!answer.ok) {
    panel.dataset.state = 'error';
    panel.replaceChildren(el('p', { className: 'provenance-error' }, `No provenance: ${problemText(answer.problem)}`));
    return;
  }
  panel.dataset.state = 'ready';
  panel.replaceChildren(...render(answer.data, url));
}

function row(label, ...value) {
  return [el('dt', {}, label), el('dd', { dataset: { field: label.toLowerCase().replace(/[^a-z]+/g, '-') } }, ...value)];
}

function shortHash(sha) {
  return sha ? el('code', { title: sha }, `${sha.slice(0, 12)}…`) : '—';
}

/** The panel's content for one `ProvenanceView`. Text only (never HTML from the record). */
export function render(view, url) {
  const p = view.sidecar;
  const image = p.image;
  const when = (iso) => el('time', { dateTime: iso }, new Date(iso).toLocaleString());
  const refs = p.refs.length === 0
    ? 'none'
    : el('ol', { className: 'provenance-refs' }, ...p.refs.map((r) => el(
      'li',
      { dataset: { outcome: r.outcome } },
      el('span', { className: 'ref-outcome' }, OUTCOME_TEXT[r.outcome] || r.outcome),
      ' ',
      el('a', { href: r.url, target: '_blank', rel: 'noopener noreferrer', className: 'ref-url' }, r.url),
      ' ',
      shortHash(r.sha256),
      r.duplicate_of ? el('span', { className: 'hint' }, ` same bytes as ${r.duplicate_of}`) : null,
    )));
  const recorded = view.recorded;
  const intact = recorded && recorded.sha256 === image.sha256;
  const price = p.ledger
    ? [formatUsd(p.price.usd), el('span', { className: 'hint' }, ` spent by ${p.ledger.event}`)]
    : [formatUsd(p.price.usd), el('span', { className: 'hint' }, ' (dry run: nothing spent)')];
  return [
    el('h3', { id: 'provenance-title' }, 'How this image was made'),
    el('dl', { className: 'provenance-facts' },
      ...row('Prompt', el('pre', { className: 'provenance-prompt' }, p.prompt)),
      ...row('References', refs),
      ...row('Model', p.model, p.model_version ? el('span', { className: 'hint' }, ` (version ${p.model_version})`) : null),
      ...row('Response id', p.response_id ? el('code', {}, p.response_id) : '—'),
      ...row('Price', ...price),
      ...row('Aspect ratio', `${p.aspect_ratio}, references ${p.ref_mode.replaceAll('_', ' ')}`),
      ...row('Requested by', p.user),
      ...row('Generated', when(p.generated_at)),
      ...row('Attempt', `${p.attempt}, retry round ${p.round}`),
      ...row('Image', shortHash(image.sha256), ` ${image.bytes} bytes`,
        el('span', { className: intact ? 'provenance-ok' : 'provenance-mismatch' },
          intact ? ' — matches the row state' : ' — does not match the row state')),
    ),
    el('a', { href: url, target: '_blank', rel: 'noopener', className: 'provenance-json' }, 'Provenance as JSON'),
  ];
}
