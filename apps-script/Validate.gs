/**
 * Validation: every selected row is checked the way the server checks it (common/src/domain/*.rs,
 * common/src/batch_spec.rs, common/src/limits.rs), so the user sees all problems at once, before
 * anything is sent. The server checks again; its 422 is shown the same way (Client.gs).
 *
 * The wire is strict (see /openapi.json): nothing is trimmed and every enum has one spelling. So a
 * cell is checked and sent exactly as it reads: " A-1" or "Style only" is refused here, with the
 * fix, as the server would refuse it, never quietly rewritten. What the sheet itself changes is
 * read back: a number cell is a number, a typed 16:9 that Sheets made a time is 16:9 again, and
 * several references in one cell are split at "|" and line breaks.
 */

var LIMITS = {
  maxPromptChars: 4000, // Limits::max_prompt_chars
  maxRefs: 6, // Limits::max_refs, row and global references together
  maxSceneIdLen: 64, // SceneId::MAX_LEN
  maxVariants: 3, // Variants::MAX
  maxRefUrlLen: 2048, // RefUrl::MAX_LEN
};
var ASPECT_RATIOS = ['1:1', '2:3', '3:2', '3:4', '4:3', '4:5', '5:4', '9:16', '16:9', '21:9'];

/** How to fix each kind of problem: the server's advice (ErrorCode::advice), word for word. */
var ADVICE = {
  INVALID_JSON: 'Send a JSON body shaped like the OpenAPI document at /openapi.json.',
  UNKNOWN_FIELD: 'Remove the field or check its spelling against /openapi.json.',
  BATCH_EMPTY: 'Select at least one row.',
  TOO_MANY_ROWS: 'Split the selection into smaller batches.',
  DUPLICATE_SCENE_ID: 'Give every row its own scene_id, or remove the repeated row.',
  INVALID_SCENE_ID: "Use 1–64 letters, digits, '-', '_' or '.', not starting with '.'.",
  INVALID_PROMPT: 'Write a prompt that is not empty and within the length limit.',
  INVALID_VARIANTS: 'Ask for 1, 2 or 3 variants.',
  TOO_MANY_REFS: 'Use at most 6 distinct reference images per row, row and global refs together.',
  INVALID_REF_URL: "Use an https:// or gs:// URL (separate several with '|').",
  INVALID_REF_MODE: 'Use style_only or style_and_composition.',
  INVALID_ASPECT_RATIO: 'Use one of 1:1, 2:3, 3:2, 3:4, 4:3, 4:5, 5:4, 9:16, 16:9, 21:9.',
  REF_FORBIDDEN_ADDRESS: 'Use a public https:// URL; private and internal addresses are refused.',
};

/**
 * ref_url.rs RefUrl::pattern with the cloud's policy (no http://, no private hosts, no files):
 * the grammar every accepted reference matches, written so that Rust, Python and ECMAScript read it
 * alike. /openapi.json states the same pattern (components.schemas.RefUrl); the end-to-end test
 * checks that the two are equal.
 */
var REF_URL_PATTERN =
  "^(https://(([A-Za-z0-9]+(-[A-Za-z0-9]+)*\\.)+[A-Za-z][A-Za-z0-9]*(-[A-Za-z0-9]+)*\\.?|((25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\\.){3}(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])|\\[(([0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}|([0-9a-fA-F]{1,4}:){1,7}:|([0-9a-fA-F]{1,4}:){1,6}:[0-9a-fA-F]{1,4}|([0-9a-fA-F]{1,4}:){1,5}(:[0-9a-fA-F]{1,4}){1,2}|([0-9a-fA-F]{1,4}:){1,4}(:[0-9a-fA-F]{1,4}){1,3}|([0-9a-fA-F]{1,4}:){1,3}(:[0-9a-fA-F]{1,4}){1,4}|([0-9a-fA-F]{1,4}:){1,2}(:[0-9a-fA-F]{1,4}){1,5}|[0-9a-fA-F]{1,4}:(:[0-9a-fA-F]{1,4}){1,6}|:((:[0-9a-fA-F]{1,4}){1,7}|:))\\])(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}|0))?([/?#][!-~]*)?|gs://[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]/(refs/[0-9a-f]{64}|images/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}-v[1-3]\\.png))$";
var REF_URL_GRAMMAR = new RegExp(REF_URL_PATTERN);

/** What Rust's str::trim removes: Unicode White_Space (not U+FEFF, which JavaScript's trim removes). */
var RUST_WHITE_SPACE = /^[\t\n\u000B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*$/;

/**
 * @typedef {Object} RowProblem
 * @property {number|null} row sheet row number (null for the whole selection)
 * @property {string} column the column to fix
 * @property {string} message what is wrong
 * @property {string} fix how to fix it
 */

/**
 * @typedef {Object} RowRequest the wire shape of one row (api.rs RowRequest)
 * @property {string} scene_id
 * @property {string} prompt
 * @property {number} variants
 * @property {string[]} refs
 * @property {string} ref_mode
 * @property {string} [aspect_ratio]
 */

/**
 * Checks the rows and builds the request's rows. `problems` lists everything wrong; the rows are
 * only meant to be sent when it is empty.
 * @param {SheetRow[]} rows
 * @param {{maxRows: number}} settings
 * @returns {{rows: RowRequest[], problems: RowProblem[]}}
 */
function validateRows_(rows, settings) {
  var problems = [];
  if (rows.length === 0) {
    problems.push({ row: null, column: '', message: 'No filled-in rows are selected.', fix: ADVICE.BATCH_EMPTY });
    return { rows: [], problems: problems };
  }
  if (rows.length > settings.maxRows) {
    problems.push({
      row: null,
      column: '',
      message: rows.length + ' rows are selected; the service accepts at most ' + settings.maxRows + ' rows in one batch.',
      fix: 'Select at most ' + settings.maxRows + ' rows and run it again for the rest (nothing was sent).',
    });
  }
  var seen = {};
  var out = rows.map(function (row) {
    var add = function (column, code, message) {
      problems.push({ row: row.sheetRow, column: column, message: message, fix: ADVICE[code] });
    };
    var c = row.cells;
    var sceneId = String(c.scene_id);
    var sceneError = sceneIdError_(sceneId);
    if (sceneError) {
      add('scene_id', 'INVALID_SCENE_ID', sceneError);
    } else {
      var lower = sceneId.toLowerCase();
      if (seen[lower]) {
        add('scene_id', 'DUPLICATE_SCENE_ID', 'scene_id "' + sceneId + '" is already used by row ' + seen[lower] + '.');
      } else {
        seen[lower] = row.sheetRow;
      }
    }
    var prompt = String(c.prompt);
    var promptError = promptError_(prompt);
    if (promptError) {
      add('prompt', 'INVALID_PROMPT', promptError);
    }
    var variants = parseVariants_(c.variants);
    if (variants.error) {
      add('variants', 'INVALID_VARIANTS', variants.error);
    }
    // Sent as listed, repeats included: the server counts what is sent against the limit (the
    // schema's maxItems) and reads a repeated URL as one reference.
    var refs = splitRefs_(c.refs);
    refs.forEach(function (raw) {
      var error = refUrlError_(raw);
      if (error) {
        add('refs', error.code, error.message);
      }
    });
    if (refs.length > LIMITS.maxRefs) {
      add('refs', 'TOO_MANY_REFS', refs.length + ' references; the limit is ' + LIMITS.maxRefs + '.');
    }
    var refMode = parseRefMode_(c.ref_mode);
    if (refMode.error) {
      add('ref_mode', 'INVALID_REF_MODE', refMode.error);
    }
    var aspect = parseAspectRatio_(c.aspect_ratio);
    if (aspect.error) {
      add('aspect_ratio', 'INVALID_ASPECT_RATIO', aspect.error);
    }
    /** @type {RowRequest} */
    var request = {
      scene_id: sceneId,
      prompt: prompt,
      variants: variants.value,
      refs: refs,
      ref_mode: refMode.value,
    };
    if (aspect.value) {
      request.aspect_ratio = aspect.value;
    }
    return request;
  });
  return { rows: out, problems: problems };
}

/** SceneId::parse, nothing trimmed. The length counts UTF-8 bytes, as Rust's str::len does. */
function sceneIdError_(s) {
  if (s === '') {
    return 'scene_id is empty.';
  }
  if (s.trim() !== s) {
    return 'scene_id "' + s + '" has spaces around it; remove them.';
  }
  var bytes = Utilities.newBlob(s).getBytes().length;
  if (bytes > LIMITS.maxSceneIdLen) {
    return 'scene_id is ' + bytes + ' characters long; the limit is ' + LIMITS.maxSceneIdLen + '.';
  }
  if (s.charAt(0) === '.') {
    return 'scene_id "' + s + '" starts with ".".';
  }
  var bad = s.match(/[^A-Za-z0-9._-]/);
  if (bad) {
    return 'scene_id "' + s + '" contains ' + describeChar_(bad[0]) + '; use letters, digits, "-", "_" or ".".';
  }
  return '';
}

function describeChar_(ch) {
  return ch === ' ' ? 'a space' : '"' + ch + '"';
}

/**
 * Prompt::parse, in its order: at most maxPromptChars characters as sent (surrounding white space
 * counts), no control characters but \n \t \r, and not blank. The server keeps it trimmed.
 */
function promptError_(s) {
  var chars = Array.from(s).length;
  if (chars > LIMITS.maxPromptChars) {
    return 'prompt is ' + chars + ' characters long; the limit is ' + LIMITS.maxPromptChars + '.';
  }
  // Rust's char::is_control: the Cc category, U+0000–U+001F and U+007F–U+009F.
  if (/[\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]/.test(s)) {
    return 'prompt contains control characters (invisible characters pasted with the text).';
  }
  if (RUST_WHITE_SPACE.test(s)) {
    return 'prompt is empty.';
  }
  return '';
}

/**
 * Variants::parse; a blank cell is 1, as an absent field is on the server. A number typed into a
 * text cell ("2") is read as the number it shows; nothing else is.
 */
function parseVariants_(cell) {
  var raw = typeof cell === 'number' ? cell : String(cell);
  if (raw === '') {
    return { value: 1, error: '' };
  }
  var n = typeof raw === 'number' ? raw : /^[0-9]+$/.test(raw) ? Number(raw) : NaN;
  if (!Number.isInteger(n)) {
    return { value: 1, error: 'variants "' + raw + '" is not a whole number; ask for 1 to ' + LIMITS.maxVariants + '.' };
  }
  if (n < 1 || n > LIMITS.maxVariants) {
    return { value: 1, error: 'variants is ' + n + '; ask for 1 to ' + LIMITS.maxVariants + '.' };
  }
  return { value: n, error: '' };
}

/** RefMode::from_wire: exactly style_only or style_and_composition; a blank cell is the default. */
function parseRefMode_(cell) {
  var raw = String(cell);
  if (raw === '') {
    return { value: 'style_only', error: '' };
  }
  if (raw === 'style_only' || raw === 'style_and_composition') {
    return { value: raw, error: '' };
  }
  return { value: '', error: 'ref_mode "' + raw + '" is not style_only or style_and_composition.' };
}

/**
 * AspectRatio::from_wire: exactly one of ASPECT_RATIOS; a blank cell is the default. Sheets turns
 * a typed 16:9 into the time 16:09:00, so a time cell is read back as the hours:minutes typed.
 */
function parseAspectRatio_(cell) {
  var raw;
  if (Object.prototype.toString.call(cell) === '[object Date]') {
    raw = cell.getHours() + ':' + cell.getMinutes();
  } else {
    raw = String(cell);
  }
  if (raw === '') {
    return { value: '', error: '' };
  }
  if (ASPECT_RATIOS.indexOf(raw) < 0) {
    return { value: '', error: 'aspect_ratio "' + raw + '" is not supported.' };
  }
  return { value: raw, error: '' };
}

/**
 * The refs cell: several URLs separated by "|" or line breaks. Only empty pieces (a trailing "|",
 * a blank line) are dropped; a piece with spaces around it is a reference the server refuses.
 */
function splitRefs_(cell) {
  return String(cell)
    .split(/[|\r\n]+/)
    .filter(function (s) { return s !== ''; });
}

/**
 * RefUrl::check with the cloud's policy: the grammar (422 INVALID_REF_URL, worded as the server's
 * why_not words it), then the address policy (403 REF_FORBIDDEN_ADDRESS). Apps Script has no URL
 * class, so what is wrong with a refused reference is read with patterns.
 * @returns {{code: string, message: string}|null}
 */
function refUrlError_(s) {
  var invalid = function (message) { return { code: 'INVALID_REF_URL', message: message + '.' }; };
  if (Utilities.newBlob(s).getBytes().length > LIMITS.maxRefUrlLen) {
    return invalid('reference URL is longer than ' + LIMITS.maxRefUrlLen + ' characters');
  }
  if (!REF_URL_GRAMMAR.test(s)) {
    return invalid(whyNot_(s));
  }
  var host = s.match(/^https:\/\/(\[[^\]]*\]|[^/?#:]*)/);
  if (host && hostIsForbidden_(host[1])) {
    return { code: 'REF_FORBIDDEN_ADDRESS', message: 'reference "' + s + '" points at a private or internal address.' };
  }
  return null;
}

/** ref_url.rs why_not: what is wrong with a reference the grammar refused, as the server says it. */
function whyNot_(s) {
  var quoted = 'reference "' + s + '"';
  if (s.trim() !== s) {
    return quoted + ' has spaces around it';
  }
  var scheme = s.match(/^([A-Za-z][A-Za-z0-9+.-]*):/);
  if (!scheme) {
    return quoted + ' is not a URL';
  }
  var name = scheme[1].toLowerCase();
  var rest = s.slice(scheme[0].length);
  if (name === 'http') {
    return quoted + ' uses http://; use https://';
  }
  if (name === 'gs') {
    var gs = rest.match(/^\/\/([^/?#]*)(\/[^?#]*)?/) || ['', '', ''];
    return !gs[1] || !gs[2] || gs[2].length <= 1 ? quoted + ' must look like gs://bucket/object' : quoted + ': ' + GS_REFUSAL;
  }
  if (name === 'file') {
    return quoted + ' is a local file; upload it and use its https:// URL';
  }
  if (name !== 'https') {
    return quoted + ' has scheme "' + name + '"; use https:// or gs://';
  }
  var authority = rest.match(/^\/\/([^/?#]*)/);
  if (authority && authority[1].indexOf('@') >= 0) {
    return quoted + ' carries credentials; use a public URL';
  }
  return quoted + ' is not in the accepted form: a host name of ASCII letters, digits and single hyphens, an ' +
    'optional port, then a path of printable ASCII (percent-encode the rest)';
}

/** ref_url.rs GS_REFUSAL: one sentence whatever the reason, as the server words it. */
var GS_REFUSAL = "a gs:// reference may name only this deployment's bucket, and in it only the reference " +
  'library (refs/{sha256}) or the images of your own batches (images/{batch}/…)';

/** refs/address_policy.rs host_is_forbidden: loopback, private, link-local, metadata and the like. */
function hostIsForbidden_(host) {
  var h = host.toLowerCase().replace(/\.$/, '');
  if (h.charAt(0) === '[') {
    return ipv6IsForbidden_(h.slice(1, -1));
  }
  var v4 = parseIpv4_(h);
  if (v4) {
    return ipv4IsForbidden_(v4);
  }
  var internal = ['localhost', 'metadata', 'metadata.google.internal', 'metadata.goog'];
  return (
    internal.some(function (n) { return h === n || h.slice(-(n.length + 1)) === '.' + n; }) ||
    /\.internal$/.test(h) ||
    /\.local$/.test(h)
  );
}

/**
 * A dotted-quad IPv4 address (the only form REF_URL_GRAMMAR lets through), or null for a name.
 * @returns {number[]|null} four octets
 */
function parseIpv4_(host) {
  return /^\d+\.\d+\.\d+\.\d+$/.test(host) ? host.split('.').map(Number) : null;
}

/** address_policy.rs REFUSED_V4: the IANA IPv4 Special-Purpose Address Registry, multicast, reserved. */
var REFUSED_V4 = [
  [0, 0, 0, 0, 8], [10, 0, 0, 0, 8], [100, 64, 0, 0, 10], [127, 0, 0, 0, 8], [169, 254, 0, 0, 16],
  [172, 16, 0, 0, 12], [192, 0, 0, 0, 24], [192, 0, 2, 0, 24], [192, 31, 196, 0, 24], [192, 52, 193, 0, 24],
  [192, 88, 99, 0, 24], [192, 168, 0, 0, 16], [192, 175, 48, 0, 24], [198, 18, 0, 0, 15], [198, 51, 100, 0, 24],
  [203, 0, 113, 0, 24], [224, 0, 0, 0, 4], [240, 0, 0, 0, 4],
];

/** address_policy.rs REFUSED_V6 (inside 2000::/3; everything outside it is refused too). */
var REFUSED_V6 = [
  [[0x2001, 0, 0, 0, 0, 0, 0, 0], 23], [[0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32], [[0x2002, 0, 0, 0, 0, 0, 0, 0], 16],
  [[0x2620, 0x4f, 0x8000, 0, 0, 0, 0, 0], 48], [[0x3fff, 0, 0, 0, 0, 0, 0, 0], 20],
];

/** Whether the first `prefix` bits of two equal-length lists of `width`-bit numbers agree. */
function prefixMatches_(a, b, prefix, width) {
  for (var i = 0; i < a.length && prefix > 0; i++, prefix -= width) {
    var bits = Math.min(width, prefix);
    var shift = width - bits;
    if (Math.floor(a[i] / Math.pow(2, shift)) !== Math.floor(b[i] / Math.pow(2, shift))) {
      return false;
    }
  }
  return true;
}

function ipv4IsForbidden_(o) {
  return REFUSED_V4.some(function (net) { return prefixMatches_(o, net.slice(0, 4), net[4], 8); });
}

/**
 * An IPv6 address's eight 16-bit groups ("::" and a trailing dotted IPv4 allowed), or null.
 * @returns {number[]|null}
 */
function parseIpv6_(text) {
  var h = text.toLowerCase();
  var tail = [];
  var v4 = h.match(/^(.*:)(\d+\.\d+\.\d+\.\d+)$/);
  if (v4) {
    var parts = v4[2].split('.').map(Number);
    if (parts.some(function (p) { return p > 255; })) {
      return null;
    }
    tail = [parts[0] * 256 + parts[1], parts[2] * 256 + parts[3]];
    h = v4[1].slice(-2) === '::' ? v4[1] : v4[1].slice(0, -1);
  }
  var halves = h.split('::');
  if (halves.length > 2) {
    return null;
  }
  var groups = function (x) { return x === '' ? [] : x.split(':'); };
  var head = groups(halves[0]);
  var rest = halves.length === 2 ? groups(halves[1]) : [];
  if (head.concat(rest).some(function (g) { return !/^[0-9a-f]{1,4}$/.test(g); })) {
    return null;
  }
  var missing = 8 - head.length - rest.length - tail.length;
  if ((halves.length === 2 && missing < 1) || (halves.length === 1 && missing !== 0)) {
    return null;
  }
  var zeros = [];
  for (var i = 0; i < missing; i++) {
    zeros.push(0);
  }
  return head.concat(zeros, rest).map(function (g) { return typeof g === 'number' ? g : parseInt(g, 16); }).concat(tail);
}

function ipv6IsForbidden_(h) {
  var g = parseIpv6_(h);
  if (!g) {
    return true; // the server would not parse it as a URL host either
  }
  var mapped = g.slice(0, 5).every(function (x) { return x === 0; }) && g[5] === 0xffff;
  var nat64 = prefixMatches_(g, [0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96, 16);
  if (mapped || nat64) {
    return ipv4IsForbidden_([g[6] >> 8, g[6] & 0xff, g[7] >> 8, g[7] & 0xff]);
  }
  if (!prefixMatches_(g, [0x2000, 0, 0, 0, 0, 0, 0, 0], 3, 16)) {
    return true; // outside global unicast 2000::/3
  }
  return REFUSED_V6.some(function (net) { return prefixMatches_(g, net[0], net[1], 16); });
}
