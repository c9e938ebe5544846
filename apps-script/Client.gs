/**
 * Client: every call to the service. Requests carry the user's Google ID token (the server checks
 * its audience, the script's OAuth client id, and its verified email), HTTP errors never throw
 * (muteHttpExceptions), and every application/problem+json answer becomes a readable message.
 */

/** Attempts per request when the network or the service is briefly unavailable. */
var FETCH_ATTEMPTS = 4;
/** HTTP statuses that mean "try the same request again shortly". */
var RETRYABLE_STATUSES = [429, 502, 503, 504];

/**
 * @typedef {Object} Problem RFC 7807 (common/src/problem.rs)
 * @property {string} code
 * @property {number} status
 * @property {string} title
 * @property {string} detail
 * @property {string} [advice]
 * @property {{code: string, row?: number, scene_id?: string, field: string, detail: string}[]} [errors]
 * @property {{limit_usd: number, spent_usd: number, reserved_usd: number, remaining_usd: number}} [budget]
 * @property {string} [resets_at]
 */

/**
 * @typedef {Object} ApiAnswer
 * @property {number} status
 * @property {*} body the parsed JSON on success
 * @property {Problem|null} problem set when the service refused or could not be reached
 */

/**
 * Calls the service. Retries with the same request (and so the same Idempotency-Key) when the
 * fetch throws or the service answers 429/5xx, backing off exponentially.
 * @param {Settings} settings
 * @param {string} method
 * @param {string} path starting with /
 * @param {Object} [body] sent as JSON
 * @param {{idempotencyKey?: string}} [options]
 * @returns {ApiAnswer}
 */
function callApi_(settings, method, path, body, options) {
  var headers = {
    Authorization: 'Bearer ' + ScriptApp.getIdentityToken(),
    Accept: 'application/json, application/problem+json',
  };
  if (options && options.idempotencyKey) {
    headers['Idempotency-Key'] = options.idempotencyKey;
  }
  /** @type {GoogleAppsScript.URL_Fetch.URLFetchRequestOptions} */
  var params = {
    method: /** @type {GoogleAppsScript.URL_Fetch.HttpMethod} */ (method.toLowerCase()),
    headers: headers,
    muteHttpExceptions: true,
    followRedirects: true,
  };
  if (body !== undefined) {
    params.contentType = 'application/json';
    params.payload = JSON.stringify(body);
  }
  var url = settings.serviceUrl + path;
  var response = null;
  var lastError = '';
  for (var attempt = 0; attempt < FETCH_ATTEMPTS; attempt++) {
    if (attempt > 0) {
      Utilities.sleep(backoffMs_(attempt - 1));
    }
    try {
      response = UrlFetchApp.fetch(url, params);
    } catch (e) {
      // DNS, TLS, time-outs and UrlFetch quota: the request may or may not have arrived, which is
      // what the Idempotency-Key is for.
      lastError = errorText_(e);
      response = null;
      continue;
    }
    if (RETRYABLE_STATUSES.indexOf(response.getResponseCode()) < 0) {
      break;
    }
  }
  if (!response) {
    return {
      status: 0,
      body: null,
      problem: {
        code: 'UNREACHABLE',
        status: 0,
        title: 'The service could not be reached',
        detail: settings.serviceUrl + ' did not answer (' + lastError + ').',
        advice: 'Check the service URL in Assets › Settings, then try again in a minute.',
      },
    };
  }
  return readAnswer_(response);
}

/** @param {GoogleAppsScript.URL_Fetch.HTTPResponse} response */
function readAnswer_(response) {
  var status = response.getResponseCode();
  var text = response.getContentText();
  var json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch (e) {
    json = null;
  }
  if (status >= 200 && status < 300) {
    return { status: status, body: json, problem: null };
  }
  if (json && typeof json === 'object' && json.code && json.detail !== undefined) {
    return { status: status, body: null, problem: /** @type {Problem} */ (json) };
  }
  return {
    status: status,
    body: null,
    problem: {
      code: 'HTTP_' + status,
      status: status,
      title: 'The service answered HTTP ' + status,
      detail: text ? String(text).slice(0, 300) : 'an empty answer',
      advice: 'Check the service URL in Assets › Settings; if it is right, try again in a minute.',
    },
  };
}

/**
 * A problem as one readable paragraph. A 402 names what is left and when the budget resets; an
 * auth failure says which settings to check.
 * @param {Problem} p
 * @returns {string}
 */
function describeProblem_(p) {
  if (p.code === 'BUDGET_EXCEEDED') {
    return overBudgetMessage_(p.budget ? p.budget.remaining_usd : null, p.resets_at || nextUtcMidnight_()) +
      '\n\n' + p.detail;
  }
  var text = (p.title || p.code) + '\n' + p.detail;
  if (p.advice) {
    text += '\n\n' + p.advice;
  }
  if (p.code === 'UNAUTHENTICATED') {
    text += '\n\nThe service must accept this script\'s OAuth client id as an audience (see the README, ' +
      '"The script\'s OAuth client id").';
  } else if (p.code === 'FORBIDDEN') {
    text += '\n\nYour account: ' + Session.getEffectiveUser().getEmail();
  }
  return text;
}

/** "over today's budget: $X left, resets at …" (a 402, or an estimate beyond what is left). */
function overBudgetMessage_(remainingUsd, resetsAt) {
  var left = remainingUsd === null || remainingUsd === undefined ? 'nothing' : usd_(Math.max(0, remainingUsd));
  return "Over today's budget: " + left + ' left, resets at ' + formatResetTime_(resetsAt) + '.';
}

/** The next UTC midnight, when the daily budget starts again (budget/daily.rs). */
function nextUtcMidnight_() {
  var now = new Date(Date.now());
  var next = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate() + 1);
  return new Date(next).toISOString().replace('.000Z', 'Z');
}

/** "2026-11-29T00:00:00Z" as "00:00 UTC (01:00 Europe/Paris, in 3 h 12 min)". */
function formatResetTime_(iso) {
  var at = new Date(iso);
  if (isNaN(at.getTime())) {
    return iso;
  }
  var zone = Session.getScriptTimeZone();
  var local = Utilities.formatDate(at, zone, 'yyyy-MM-dd HH:mm');
  var minutes = Math.max(0, Math.round((at.getTime() - Date.now()) / 60000));
  return Utilities.formatDate(at, 'UTC', 'HH:mm') + ' UTC (' + local + ' ' + zone + ', in ' +
    Math.floor(minutes / 60) + ' h ' + (minutes % 60) + ' min)';
}

/** Dollars as people write them: $0.10, and $0.234 when there are fractions of a cent ($0.039 an image). */
function usd_(n) {
  var value = Number(n);
  var cents = value * 100;
  if (Math.abs(cents - Math.round(cents)) < 1e-6) {
    return '$' + value.toFixed(2);
  }
  // Tenths of a cent, or hundredths where they count: a bulk image is $0.0195, not $0.020.
  return '$' + value.toFixed(4).replace(/0$/, '');
}

/**
 * A 422's field errors as sidebar problems: `rows[3].variants` is the 4th row sent, which is
 * mapped back to its sheet row number.
 * @param {Problem} p
 * @param {number[]} sheetRows the sheet row of each row sent, in order
 * @returns {RowProblem[]}
 */
function problemToRowProblems_(p, sheetRows) {
  var errors = p.errors && p.errors.length > 0 ? p.errors : [{ code: p.code, field: '', detail: p.detail }];
  return errors.map(function (e) {
    var m = /^rows\[(\d+)\]\.([a-z_]+)/.exec(e.field || '');
    var index = e.row !== undefined && e.row !== null ? e.row : m ? Number(m[1]) : null;
    return {
      row: index !== null && index < sheetRows.length ? sheetRows[index] : null,
      column: m ? m[2] : e.field || '',
      message: e.detail,
      fix: ADVICE[e.code] || p.advice || '',
    };
  });
}

/** Exponential backoff with jitter: about 1 s, 2 s, 4 s, 8 s… capped at 32 s. */
function backoffMs_(attempt) {
  var base = Math.min(32000, 1000 * Math.pow(2, attempt));
  return base + Math.floor(Math.random() * 250);
}

function errorText_(e) {
  return e && e.message ? String(e.message) : String(e);
}
