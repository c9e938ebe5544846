// Fakes of the Apps Script services the .gs files use, and a loader that runs those files in one
// `vm` context (Apps Script's shared global scope). The spreadsheet is a real 2-D grid with values,
// formulas, rich-text links and number formats; time is a fake clock that Utilities.sleep advances.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const vm = require('node:vm');
const crypto = require('node:crypto');

const ROOT = path.resolve(__dirname, '..');

/** A1 column letters to a 1-based number. */
function columnNumber(letters) {
  return letters.toUpperCase().split('').reduce((n, ch) => n * 26 + ch.charCodeAt(0) - 64, 0);
}

class Clock {
  constructor(start = Date.UTC(2026, 10, 28, 9, 0, 0)) {
    this.t = start;
    this.sleeps = [];
  }
  now() {
    return this.t;
  }
  advance(ms) {
    this.t += ms;
  }
}

class RichText {
  constructor(text, links) {
    this.text = text;
    this.links = links; // [{start, end, url}]
  }
  getText() {
    return this.text;
  }
  getLinkUrl() {
    return this.links.length === 1 && this.links[0].start === 0 && this.links[0].end === this.text.length
      ? this.links[0].url : null;
  }
  getRuns() {
    return this.links.map((l) => ({
      getText: () => this.text.slice(l.start, l.end),
      getLinkUrl: () => l.url,
      getStartIndex: () => l.start,
      getEndIndex: () => l.end,
    }));
  }
}

class RichTextBuilder {
  constructor() {
    this.text = '';
    this.links = [];
  }
  setText(t) {
    this.text = String(t);
    return this;
  }
  setLinkUrl(start, end, url) {
    if (start < 0 || end > this.text.length || start >= end) {
      throw new Error(`setLinkUrl(${start}, ${end}) is outside "${this.text}"`);
    }
    this.links.push({ start, end, url });
    return this;
  }
  build() {
    return new RichText(this.text, this.links.slice());
  }
}

/** One cell: what Sheets keeps apart and the script may read back. */
function emptyCell() {
  return { value: '', formula: '', rich: null, format: '' };
}

class FakeSheet {
  /**
   * @param {string} name
   * @param {number} id
   * @param {Array<Array<*>>} rows header row first
   */
  constructor(name, id, rows) {
    this.name = name;
    this.id = id;
    this.cells = rows.map((r) => r.map((v) => ({ ...emptyCell(), value: v })));
    this.selection = [];
    this.faults = []; // {kind: 'read'|'write', times, message}
    this.writes = 0;
    this.killAfter = Infinity;
  }
  getName() {
    return this.name;
  }
  getSheetId() {
    return this.id;
  }
  cell(r, c) {
    while (this.cells.length < r) this.cells.push([]);
    const row = this.cells[r - 1];
    while (row.length < c) row.push(emptyCell());
    return row[c - 1];
  }
  peek(r, c) {
    const row = this.cells[r - 1];
    return row && row[c - 1] ? row[c - 1] : emptyCell();
  }
  getLastRow() {
    for (let r = this.cells.length; r >= 1; r--) {
      if (this.cells[r - 1].some((c) => c.value !== '' || c.formula)) return r;
    }
    return 0;
  }
  getLastColumn() {
    let last = 0;
    this.cells.forEach((row) => row.forEach((c, i) => {
      if (c.value !== '' || c.formula) last = Math.max(last, i + 1);
    }));
    return last;
  }
  getRange(a, b, c, d) {
    if (typeof a === 'string') {
      const m = /^([A-Z]+)(\d+)(?::([A-Z]+)(\d+))?$/i.exec(a);
      if (!m) throw new Error(`bad A1 ${a}`);
      const r1 = Number(m[2]);
      const c1 = columnNumber(m[1]);
      const r2 = m[4] ? Number(m[4]) : r1;
      const c2 = m[3] ? columnNumber(m[3]) : c1;
      return new FakeRange(this, r1, c1, r2 - r1 + 1, c2 - c1 + 1);
    }
    if (!(a >= 1 && b >= 1)) throw new Error(`getRange(${a}, ${b}): rows and columns start at 1`);
    return new FakeRange(this, a, b, c === undefined ? 1 : c, d === undefined ? 1 : d);
  }
  /** The test's selection, in A1 ranges ("A2:F13") or whole rows ([2, 13]). */
  select(...ranges) {
    this.selection = ranges.map((r) => (Array.isArray(r)
      ? new FakeRange(this, r[0], 1, r[1] - r[0] + 1, Math.max(1, this.getLastColumn()))
      : this.getRange(r)));
  }
  getActiveRangeList() {
    return this.selection.length ? { getRanges: () => this.selection.slice() } : null;
  }
  getActiveRange() {
    return this.selection[0] || null;
  }
  /** The next `times` reads or writes throw `message` (a quota or a failure of the Sheets service). */
  fail(kind, times, message) {
    this.faults.push({ kind, times, message });
  }
  hit(kind) {
    const fault = this.faults.find((f) => f.kind === kind && f.times > 0);
    if (fault) {
      fault.times--;
      throw new Error(fault.message);
    }
    if (kind === 'write') {
      this.writes++;
      if (this.writes > this.killAfter) {
        throw new Error('Exceeded maximum execution time');
      }
    }
  }
  /** Rows 2.. reordered by `key(rowValues)`; what a user's Data › Sort range does. */
  sortRows(compare) {
    const body = this.cells.slice(1);
    body.sort((x, y) => compare(x.map((c) => c.value), y.map((c) => c.value)));
    this.cells = [this.cells[0], ...body];
  }
  /** Inserts a blank row before `r`, shifting everything below down. */
  insertRowBefore(r) {
    this.cells.splice(r - 1, 0, []);
    return this;
  }
  /** Values as the test reads them, by header name: [{scene_id: …, status: …}] for rows 2.. */
  table() {
    const headers = (this.cells[0] || []).map((c) => String(c.value));
    return this.cells.slice(1).map((row, i) => {
      const out = { _row: i + 2 };
      headers.forEach((h, c) => {
        const cell = row[c] || emptyCell();
        out[h] = cell.value;
        if (cell.formula) out[h + '.formula'] = cell.formula;
        if (cell.rich) out[h + '.links'] = cell.rich.links.map((l) => l.url);
      });
      return out;
    });
  }
}

class FakeRange {
  constructor(sheet, row, col, rows, cols) {
    Object.assign(this, { sheet, row, col, rows, cols });
  }
  getRow() {
    return this.row;
  }
  getColumn() {
    return this.col;
  }
  getLastRow() {
    return this.row + this.rows - 1;
  }
  getLastColumn() {
    return this.col + this.cols - 1;
  }
  getNumRows() {
    return this.rows;
  }
  getNumColumns() {
    return this.cols;
  }
  getSheet() {
    return this.sheet;
  }
  grid(fn) {
    this.sheet.hit('read');
    const out = [];
    for (let r = 0; r < this.rows; r++) {
      const line = [];
      for (let c = 0; c < this.cols; c++) line.push(fn(this.sheet.peek(this.row + r, this.col + c)));
      out.push(line);
    }
    return out;
  }
  getValues() {
    return this.grid((c) => (c.value instanceof Date ? new Date(c.value.getTime()) : c.value));
  }
  getDisplayValues() {
    return this.grid((c) => String(c.value));
  }
  getFormulas() {
    return this.grid((c) => c.formula);
  }
  getValue() {
    return this.getValues()[0][0];
  }
  getFormula() {
    return this.getFormulas()[0][0];
  }
  getRichTextValue() {
    return this.grid((c) => c.rich || new RichText(String(c.value), []))[0][0];
  }
  each(fn) {
    this.sheet.hit('write');
    for (let r = 0; r < this.rows; r++) {
      for (let c = 0; c < this.cols; c++) fn(this.sheet.cell(this.row + r, this.col + c), r, c);
    }
    return this;
  }
  setValues(values) {
    if (values.length !== this.rows || values.some((l) => l.length !== this.cols)) {
      throw new Error(`setValues: ${values.length}x${values[0] && values[0].length} into ${this.rows}x${this.cols}`);
    }
    return this.each((cell, r, c) => Object.assign(cell, { value: values[r][c], formula: '', rich: null }));
  }
  setValue(v) {
    return this.each((cell) => Object.assign(cell, { value: v, formula: '', rich: null }));
  }
  setFormula(f) {
    // Sheets shows =IMAGE() as a picture; its value reads back as an empty string.
    return this.each((cell) => Object.assign(cell, { value: '', formula: f, rich: null }));
  }
  setRichTextValue(rich) {
    return this.each((cell) => Object.assign(cell, { value: rich.getText(), formula: '', rich }));
  }
  setNumberFormat(f) {
    return this.each((cell) => Object.assign(cell, { format: f }));
  }
  clearContent() {
    return this.each((cell) => Object.assign(cell, { value: '', formula: '', rich: null }));
  }
}

class FakeSpreadsheet {
  constructor(sheets) {
    this.sheets = sheets;
    this.active = sheets[0];
    this.toasts = [];
  }
  getActiveSheet() {
    return this.active;
  }
  getSheets() {
    return this.sheets.slice();
  }
  getId() {
    return 'fake-spreadsheet';
  }
  toast(msg, title, seconds) {
    this.toasts.push({ msg, title, seconds });
  }
}

const BUTTONS = { OK: 'OK', CANCEL: 'CANCEL', YES: 'YES', NO: 'NO', CLOSE: 'CLOSE' };

/** The Ui: menus, alerts, prompts, sidebars and dialogs are recorded; answers come from `answers`. */
class FakeUi {
  constructor() {
    this.menus = [];
    this.alerts = [];
    this.prompts = [];
    this.sidebars = [];
    this.dialogs = [];
    this.promptAnswers = []; // [{button, text}]
    this.alertAnswers = []; // ['YES' | 'NO' | 'OK' …]
    this.Button = BUTTONS;
    this.ButtonSet = { OK: 'OK', OK_CANCEL: 'OK_CANCEL', YES_NO: 'YES_NO', YES_NO_CANCEL: 'YES_NO_CANCEL' };
  }
  createMenu(name) {
    const menu = { name, items: [], separators: 0 };
    const api = {
      addItem: (caption, fn) => { menu.items.push({ caption, fn }); return api; },
      addSeparator: () => { menu.separators++; return api; },
      addToUi: () => { this.menus.push(menu); },
    };
    return api;
  }
  alert(title, prompt, buttons) {
    const text = prompt === undefined ? title : prompt;
    this.alerts.push({ title: prompt === undefined ? '' : title, text, buttons });
    return this.alertAnswers.length ? this.alertAnswers.shift() : buttons === 'YES_NO' ? BUTTONS.YES : BUTTONS.OK;
  }
  prompt(title, prompt, buttons) {
    this.prompts.push({ title, text: prompt, buttons });
    const next = this.promptAnswers.length ? this.promptAnswers.shift() : { button: BUTTONS.CANCEL, text: '' };
    const a = typeof next === 'function' ? next() : next; // a function acts while the prompt is open
    return { getSelectedButton: () => a.button, getResponseText: () => a.text };
  }
  showSidebar(html) {
    this.sidebars.push(html);
  }
  showModalDialog(html, title) {
    this.dialogs.push({ html, title, modal: true });
  }
  showModelessDialog(html, title) {
    this.dialogs.push({ html, title, modal: false });
  }
}

class FakeHtmlOutput {
  constructor(file, content) {
    this.file = file;
    this.content = content;
    this.title = '';
  }
  setTitle(t) { this.title = t; return this; }
  getTitle() { return this.title; }
  setWidth(w) { this.width = w; return this; }
  setHeight(h) { this.height = h; return this; }
  getContent() { return this.content; }
  /** The JSON the template put into `var DATA = …;`, as the page's script would see it. */
  data() {
    const m = /var DATA = (.*?);\n/.exec(this.content);
    if (!m) throw new Error(`${this.file}.html has no DATA`);
    return JSON.parse(m[1]);
  }
}

/**
 * HtmlService: createTemplateFromFile reads the real .html file and evaluates its scriptlets
 * (`<?= ?>` escaped, `<?!= ?>` raw) with the template's fields and the script's functions in scope.
 */
function makeHtmlService(getContext) {
  const escape = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
  return {
    createTemplateFromFile(name) {
      const source = fs.readFileSync(path.join(ROOT, `${name}.html`), 'utf8');
      const template = {
        evaluate() {
          const fields = Object.keys(template).filter((k) => k !== 'evaluate');
          const content = source.replace(/<\?(!?=)([\s\S]*?)\?>/g, (_, kind, expr) => {
            const fn = vm.runInContext(`(function (${fields.join(',')}) { return (${expr}); })`, getContext());
            const value = fn(...fields.map((f) => template[f]));
            return kind === '!=' ? String(value) : escape(value);
          });
          return new FakeHtmlOutput(name, content);
        },
      };
      return template;
    },
    createHtmlOutput(html) {
      return new FakeHtmlOutput('inline', String(html || ''));
    },
  };
}

class FakeProperties {
  constructor() {
    this.map = new Map();
  }
  getProperty(k) { return this.map.has(k) ? this.map.get(k) : null; }
  setProperty(k, v) { this.map.set(k, String(v)); return this; }
  setProperties(obj) { Object.keys(obj).forEach((k) => this.map.set(k, String(obj[k]))); return this; }
  getProperties() { return Object.fromEntries(this.map); }
  deleteProperty(k) { this.map.delete(k); return this; }
  getKeys() { return [...this.map.keys()]; }
}

/** A lock another execution may hold (`heldElsewhere`), as LockService's are. */
class FakeLock {
  constructor(name) {
    this.name = name;
    this.held = false;
    this.heldElsewhere = false;
    this.acquired = 0;
  }
  tryLock() {
    if (this.held || this.heldElsewhere) return false;
    this.held = true;
    this.acquired++;
    return true;
  }
  waitLock(ms) {
    if (!this.tryLock(ms)) throw new Error('Lock timeout: another process was holding the lock for too long.');
  }
  releaseLock() { this.held = false; }
  hasLock() { return this.held; }
}

/** Triggers belong to the user who made them: getProjectTriggers lists only the current user's. */
class FakeScriptApp {
  constructor(tokenFn, userFn = () => '') {
    this.tokenFn = tokenFn;
    this.userFn = userFn;
    this.triggers = [];
    this.created = 0;
    this.deleted = 0;
    this.tokens = 0;
  }
  getIdentityToken() {
    this.tokens++;
    return this.tokenFn();
  }
  getProjectTriggers() {
    return this.triggers.filter((t) => t.owner === this.userFn());
  }
  newTrigger(fn) {
    const spec = { fn, kind: '', everyMinutes: 0 };
    const builder = {
      timeBased: () => builder,
      everyMinutes: (n) => { spec.kind = 'clock'; spec.everyMinutes = n; return builder; },
      create: () => {
        const id = `trigger-${++this.created}`;
        const trigger = {
          owner: this.userFn(),
          getHandlerFunction: () => spec.fn,
          getUniqueId: () => id,
          getEventType: () => 'CLOCK',
          spec,
        };
        this.triggers.push(trigger);
        return trigger;
      },
    };
    return builder;
  }
  deleteTrigger(t) {
    if (t.owner !== this.userFn()) throw new Error("Sorry, you can't delete a trigger that belongs to another user.");
    const before = this.triggers.length;
    this.triggers = this.triggers.filter((x) => x.getUniqueId() !== t.getUniqueId());
    if (this.triggers.length !== before) this.deleted++;
  }
}

function fakeResponse(status, body, headers = {}) {
  const text = body === undefined || body === null ? '' : typeof body === 'string' ? body : JSON.stringify(body);
  const ct = headers['Content-Type'] || (status >= 400 ? 'application/problem+json' : 'application/json');
  return {
    getResponseCode: () => status,
    getContentText: () => text,
    getHeaders: () => ({ 'Content-Type': ct, ...headers }),
    getAllHeaders: () => ({ 'Content-Type': ct, ...headers }),
    getBlob: () => ({ getBytes: () => [...Buffer.from(text)] }),
  };
}

/**
 * UrlFetchApp over a handler `(request) => {status, body, headers}` (or a throw, as UrlFetchApp
 * throws on DNS errors and quotas). Every request is recorded with its exact headers and payload.
 */
class FakeUrlFetch {
  constructor(handler, clock, costMs = 200) {
    this.handler = handler;
    this.clock = clock;
    this.costMs = costMs;
    this.requests = [];
  }
  fetch(url, params = {}) {
    const req = {
      url,
      method: String(params.method || 'get').toUpperCase(),
      headers: { ...(params.headers || {}) },
      contentType: params.contentType,
      payload: params.payload,
      muteHttpExceptions: params.muteHttpExceptions,
    };
    this.requests.push(req);
    if (this.clock) this.clock.advance(this.costMs);
    const res = this.handler(req);
    if (!params.muteHttpExceptions && res.status >= 400) {
      throw new Error(`Request failed for ${url} returned code ${res.status}`);
    }
    return fakeResponse(res.status, res.body, res.headers);
  }
}

/** A subset of Utilities.formatDate's patterns (yyyy MM dd HH mm ss) in a named time zone. */
function formatDate(date, zone, pattern) {
  const parts = Object.fromEntries(new Intl.DateTimeFormat('en-GB', {
    timeZone: zone === 'UTC' ? 'Etc/UTC' : zone,
    year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit',
    hourCycle: 'h23',
  }).formatToParts(date).map((p) => [p.type, p.value]));
  return pattern.replace(/yyyy|MM|dd|HH|mm|ss/g, (t) => ({
    yyyy: parts.year, MM: parts.month, dd: parts.day, HH: parts.hour, mm: parts.minute, ss: parts.second,
  })[t]);
}

/** A blocking sleep, as Utilities.sleep is (the end-to-end test waits for a real server). */
function blockFor(ms) {
  if (ms > 0) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

function makeUtilities(clock, realSleepScale) {
  return {
    sleep(ms) {
      clock.sleeps.push(ms);
      clock.advance(ms);
      if (realSleepScale) blockFor(ms * realSleepScale);
    },
    getUuid: () => crypto.randomUUID(),
    DigestAlgorithm: { SHA_256: 'sha256', MD5: 'md5', SHA_1: 'sha1' },
    Charset: { UTF_8: 'utf8', US_ASCII: 'ascii' },
    computeDigest(alg, value) {
      const bytes = crypto.createHash(alg).update(typeof value === 'string' ? Buffer.from(value, 'utf8') : Buffer.from(value)).digest();
      return [...bytes].map((b) => (b > 127 ? b - 256 : b)); // Java bytes are signed
    },
    newBlob(data) {
      const buf = Array.isArray(data) ? Buffer.from(data.map((b) => b & 0xff)) : Buffer.from(String(data), 'utf8');
      return { getBytes: () => [...buf].map((b) => (b > 127 ? b - 256 : b)), getDataAsString: () => buf.toString('utf8') };
    },
    formatDate,
    base64Encode: (s) => Buffer.from(s).toString('base64'),
    base64DecodeWebSafe(s) {
      if (/[^A-Za-z0-9_=-]/.test(s) || s.replace(/=+$/, '').length % 4 === 1) throw new Error('Could not decode string.');
      return [...Buffer.from(s, 'base64url')].map((b) => (b > 127 ? b - 256 : b));
    },
  };
}

/**
 * A whole Apps Script world: the spreadsheet, the services, and the .gs files loaded into one
 * context. `http` is the UrlFetchApp handler.
 */
function makeWorld({ sheets, http, token = () => 'test-identity-token', clock = new Clock(), email = 'lead@studio.test', fetchCostMs, realSleepScale = 0 }) {
  const ss = new FakeSpreadsheet(sheets);
  const ui = new FakeUi();
  const props = { document: new FakeProperties(), user: new FakeProperties(), script: new FakeProperties() };
  const locks = { document: new FakeLock('document'), script: new FakeLock('script'), user: new FakeLock('user') };
  const user = { email }; // who runs the script now: `world.user.email = …` switches
  const scriptApp = new FakeScriptApp(token, () => user.email);
  const urlFetch = http instanceof Object && typeof http.fetch === 'function' ? http : new FakeUrlFetch(http, clock, fetchCostMs);
  let context = null;
  const globals = {
    SpreadsheetApp: {
      getActiveSpreadsheet: () => ss,
      getActive: () => ss,
      getUi: () => ui,
      newRichTextValue: () => new RichTextBuilder(),
      flush: () => {},
    },
    UrlFetchApp: urlFetch,
    ScriptApp: scriptApp,
    LockService: {
      getDocumentLock: () => locks.document,
      getScriptLock: () => locks.script,
      getUserLock: () => locks.user,
    },
    PropertiesService: {
      getDocumentProperties: () => props.document,
      getUserProperties: () => props.user,
      getScriptProperties: () => props.script,
    },
    HtmlService: makeHtmlService(() => context),
    Utilities: makeUtilities(clock, realSleepScale),
    Session: {
      getScriptTimeZone: () => 'Europe/Paris',
      getEffectiveUser: () => ({ getEmail: () => user.email }),
      getActiveUser: () => ({ getEmail: () => user.email }),
    },
    Logger: { log: () => {} },
    console: { log: () => {}, info: () => {}, warn: () => {}, error: () => {} },
    __clock: clock,
  };
  context = vm.createContext(globals);
  // The script's Date.now() is the fake clock, so time limits and backoff run in no real time.
  vm.runInContext('Date.now = function () { return __clock.now(); };', context);
  for (const file of fs.readdirSync(ROOT).filter((f) => f.endsWith('.gs')).sort()) {
    new vm.Script(fs.readFileSync(path.join(ROOT, file), 'utf8'), { filename: file }).runInContext(context);
  }
  return { ss, ui, props, locks, scriptApp, urlFetch, clock, context, gs: context, user };
}

/** Arrays made in the vm context are not deepStrictEqual to ours: compare through JSON. */
function plain(value) {
  return JSON.parse(JSON.stringify(value));
}

/** A sheet with the input headers in the given order and one row per scene. */
function sheetWith(headers, rows, id = 101, name = 'Scenes') {
  return new FakeSheet(name, id, [headers, ...rows.map((r) => headers.map((h) => (h in r ? r[h] : '')))]);
}

module.exports = {
  Clock, FakeSheet, FakeUrlFetch, FakeUi, FakeScriptApp, FakeLock, FakeProperties, RichText,
  fakeResponse, makeWorld, plain, sheetWith, formatDate, blockFor, ROOT,
};
