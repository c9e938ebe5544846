/**
 * Menu: the "Assets" menu and what each item does. Every action checks before it sends, sends at
 * most one request that changes anything per click, and shows the answer in words.
 */

/** @param {GoogleAppsScript.Events.SheetsOnOpen} [e] */
function onOpen(e) {
  var menu = SpreadsheetApp.getUi().createMenu('Assets');
  var dry = ['Generate selected rows (dry run)', 'generateDryRun'];
  var live = ['Generate selected rows (live)', 'generateLive'];
  var bulk = ['Generate selected rows (bulk: half price, within 24 h)', 'generateBulk'];
  var defaultMode = 'dry_run';
  try {
    defaultMode = getSettings_().defaultRunMode; // the default run mode (Settings) comes first
  } catch (err) {
    // Where properties cannot be read (AuthMode.NONE), the menu still appears, dry run first.
  }
  // Bulk sits next to live: the same images through Google's batch, for rows that can wait.
  var order = { dry_run: [dry, live, bulk], live: [live, bulk, dry], bulk: [bulk, live, dry] };
  (order[defaultMode] || order.dry_run).forEach(function (item) {
    menu.addItem(item[0], item[1]);
  });
  menu
    .addItem('Estimate cost', 'estimateCost')
    .addSeparator()
    .addItem('Open progress page', 'openProgressPage')
    .addItem('Retry failed rows', 'retryFailedRows')
    .addItem('Cancel batch', 'cancelBatch')
    .addSeparator()
    .addItem('Open reference manager', 'openReferenceManager')
    .addItem('Settings', 'openSettings')
    .addToUi();
}

/** How long a click waits for another click's submit to finish before giving up. */
var CLICK_LOCK_MS = 30 * 1000;
/** A request that was sent but whose answer was lost is sent again with the same key this long. */
var PENDING_KEY_TTL_MS = 15 * 60 * 1000;

// The menu's entry points. Each runs its action under guarded_, so an unexpected error reaches the
// user as a sentence in a dialog, never as a stack trace.
function generateDryRun() { guarded_(function () { submitSelection_('dry_run'); }); }
function generateLive() { guarded_(function () { submitSelection_('live'); }); }
function generateBulk() { guarded_(function () { submitSelection_('bulk'); }); }
function estimateCost() { guarded_(estimateCost_); }
function openProgressPage() { guarded_(openProgressPage_); }
function retryFailedRows() { guarded_(retryFailedRows_); }
function cancelBatch() { guarded_(cancelBatch_); }
function openReferenceManager() { guarded_(openReferenceManager_); }

/** @param {function(): void} action */
function guarded_(action) {
  try {
    action();
  } catch (e) {
    var ui = SpreadsheetApp.getUi();
    ui.alert('Assets', 'That did not finish: ' + errorText_(e) + '\n\nWhat was already written stays. Running it ' +
      'again is safe: a batch the service already accepted is answered again, not made twice.', ui.ButtonSet.OK);
  }
}

/**
 * The selection, checked: the sheet, its columns, the rows to send and the request rows, or null
 * when something was wrong and has been shown to the user.
 * @param {Settings} settings
 */
function checkedSelection_(settings) {
  var sheet = SpreadsheetApp.getActiveSpreadsheet().getActiveSheet();
  var columns = readHeaders_(sheet);
  var missing = missingColumnProblems_(columns);
  if (missing.length > 0) {
    showProblems_('The sheet is missing a column', missing);
    return null;
  }
  columns = ensureOutputColumns_(sheet);
  var rows = readRows_(sheet, columns, selectedRowNumbers_(sheet));
  var checked = validateRows_(rows, settings);
  var problems = checked.problems.concat(rowsAlreadyRunning_(rows));
  if (problems.length > 0) {
    showProblems_('Nothing was sent: fix these rows first', problems);
    return null;
  }
  return { sheet: sheet, columns: columns, rows: rows, request: checked.rows };
}

/** Selected rows still queued or running in a batch being followed: sending them again would pay twice. */
function rowsAlreadyRunning_(rows) {
  var active = {};
  followedBatches_().forEach(function (b) { active[b.id] = true; });
  return rows
    .filter(function (row) {
      var status = String(row.cells.status || '').trim();
      return active[String(row.cells.batch_id || '').trim()] && (status === 'queued' || status === 'running');
    })
    .map(function (row) {
      return {
        row: row.sheetRow,
        column: 'status',
        message: 'This row is still ' + row.cells.status + ' in batch ' + row.cells.batch_id + '.',
        fix: 'Wait for it to finish, or use Assets › Cancel batch first.',
      };
    });
}

/** Run modes that spend money (the service's RunMode::costs_money): live, and bulk at half price. */
function costsMoney_(runMode) {
  return runMode === 'live' || runMode === 'bulk';
}

/**
 * Generate selected rows: check, (live or bulk: estimate and CONFIRM), then one POST /v1/batches.
 * @param {string} runMode dry_run, live or bulk
 */
function submitSelection_(runMode) {
  var settings = requireSettings_();
  if (!settings) {
    return;
  }
  var ui = SpreadsheetApp.getUi();
  var lock = LockService.getDocumentLock();
  if (!lock.tryLock(CLICK_LOCK_MS)) {
    ui.alert('Assets', 'Another submit from this Sheet is still running; try again in a moment.', ui.ButtonSet.OK);
    return;
  }
  try {
    var selection = checkedSelection_(settings);
    if (!selection) {
      return;
    }
    var body = { rows: selection.request, global_refs: [], run_mode: runMode };
    var sheetRows = selection.rows.map(function (r) { return r.sheetRow; });
    if (costsMoney_(runMode) && !confirmPaidRun_(settings, body, sheetRows)) {
      return;
    }
    var key = idempotencyKeyFor_(body);
    var answer = callApi_(settings, 'post', '/v1/batches', body, { idempotencyKey: key });
    if (answer.problem) {
      showSubmitProblem_(answer.problem, sheetRows);
      return;
    }
    var accepted = answer.body;
    writeSameOutputs_(selection.sheet, selection.columns, sheetRows, {
      status: 'queued',
      batch_id: accepted.batch_id,
      preview: '',
      images: '',
      error: '',
      cost: '',
    });
    followBatch_({
      id: accepted.batch_id,
      sheetId: selection.sheet.getSheetId(),
      runMode: runMode,
      page: accepted.links && accepted.links.page ? accepted.links.page : '',
      submittedAt: new Date(Date.now()).toISOString(),
    });
    forgetPendingKey_(body);
    var price = { live: ', ' + usd_(accepted.estimate.usd), bulk: ', ' + usd_(accepted.estimate.usd) + ' at the bulk price' };
    SpreadsheetApp.getActiveSpreadsheet().toast(
      sheetRows.length + ' rows queued as batch ' + accepted.batch_id + ' (' + accepted.estimate.images + ' images' +
        (price[runMode] || ', dry run') + '). Results appear in the rows' +
        (runMode === 'bulk' ? ' when Google\'s batch is done, within 24 hours.' : '.'),
      'Assets', 10);
  } finally {
    lock.releaseLock();
  }
}

/**
 * The key for this click's request. A new click makes a new key, except when the very same request
 * was sent a moment ago and its answer never arrived (the run died): then the same key, so the
 * server answers with that first batch instead of making a second one.
 */
function idempotencyKeyFor_(body) {
  var props = PropertiesService.getUserProperties();
  var name = 'assetgen.pending.' + sha256Hex_(JSON.stringify(body));
  var raw = props.getProperty(name);
  var pending = raw ? JSON.parse(raw) : null;
  if (pending && Date.now() - pending.at < PENDING_KEY_TTL_MS) {
    return pending.key;
  }
  var key = Utilities.getUuid();
  props.setProperty(name, JSON.stringify({ key: key, at: Date.now() }));
  return key;
}

function forgetPendingKey_(body) {
  PropertiesService.getUserProperties().deleteProperty('assetgen.pending.' + sha256Hex_(JSON.stringify(body)));
}

function sha256Hex_(text) {
  return Utilities.computeDigest(Utilities.DigestAlgorithm.SHA_256, text, Utilities.Charset.UTF_8)
    .map(function (b) { return ('0' + (b & 0xff).toString(16)).slice(-2); })
    .join('');
}

/**
 * Live and bulk runs cost money: estimate first (at the price of the run mode sent), show images,
 * price, today's budget and its reset, and go on only when the user types CONFIRM. A bulk run also
 * says that Google's batch can take up to a day.
 * @returns {boolean}
 */
function confirmPaidRun_(settings, body, sheetRows) {
  var ui = SpreadsheetApp.getUi();
  var bulk = body.run_mode === 'bulk';
  var title = bulk ? 'Assets: bulk run' : 'Assets: live run';
  var answer = callApi_(settings, 'post', '/v1/estimate', body);
  if (answer.problem) {
    showSubmitProblem_(answer.problem, sheetRows);
    return false;
  }
  var est = answer.body;
  var budget = est.budget_after;
  var resetsAt = nextUtcMidnight_();
  if (budget.remaining_usd < 0) {
    ui.alert(title, overBudgetMessage_(budget.remaining_usd + est.estimate.usd, resetsAt) +
      '\n\nThis batch needs ' + usd_(est.estimate.usd) + '. Select fewer rows or variants. Nothing was sent.',
    ui.ButtonSet.OK);
    return false;
  }
  var price = bulk
    ? usd_(est.estimate.usd) + ' at the bulk price (half of live: ' + usd_(est.estimate.usd_if_live) + ').\n' +
      'Google runs bulk batches within 24 hours: the results can take up to a day to appear in the rows.\n'
    : usd_(est.estimate.usd) + '.\n';
  var text = body.rows.length + ' rows, ' + est.estimate.images + ' images: ' + price +
    'Budget left today: ' + usd_(budget.remaining_usd + est.estimate.usd) + ' of ' + usd_(budget.limit_usd) +
    '; after this batch ' + usd_(budget.remaining_usd) + '.\n' +
    'The budget resets at ' + formatResetTime_(resetsAt) + '.\n\n' +
    (bulk ? 'Type CONFIRM to send these rows to Google\'s batch and spend the money.'
      : 'Type CONFIRM to generate these images and spend the money.');
  var response = ui.prompt(title, text, ui.ButtonSet.OK_CANCEL);
  if (response.getSelectedButton() !== ui.Button.OK || response.getResponseText().trim() !== 'CONFIRM') {
    ui.alert('Assets', 'Not confirmed: nothing was sent.', ui.ButtonSet.OK);
    return false;
  }
  return true;
}

/**
 * A refused submit or estimate: rows in the sidebar for a 422, a 413, or any refusal that names
 * fields (a 403 for a reference to an internal address comes with the row's other problems); a
 * message otherwise.
 */
function showSubmitProblem_(problem, sheetRows) {
  var namesFields = problem.errors && problem.errors.length > 0;
  if (problem.status === 422 || problem.code === 'TOO_MANY_ROWS' || namesFields) {
    showProblems_('The service refused the batch: nothing was queued', problemToRowProblems_(problem, sheetRows));
    return;
  }
  var ui = SpreadsheetApp.getUi();
  ui.alert('Assets', describeProblem_(problem), ui.ButtonSet.OK);
}

/** Menu: what the selected rows would cost live and in bulk, and the budget. */
function estimateCost_() {
  var settings = requireSettings_();
  if (!settings) {
    return;
  }
  var selection = checkedSelection_(settings);
  if (!selection) {
    return;
  }
  var body = { rows: selection.request, global_refs: [], run_mode: 'live' };
  var answer = callApi_(settings, 'post', '/v1/estimate', body);
  var ui = SpreadsheetApp.getUi();
  if (answer.problem) {
    showSubmitProblem_(answer.problem, selection.rows.map(function (r) { return r.sheetRow; }));
    return;
  }
  var est = answer.body;
  var budget = est.budget_after;
  var left = budget.remaining_usd + est.estimate.usd;
  var lines = [
    selection.rows.length + ' rows, ' + est.estimate.images + ' images.',
    'Live: ' + usd_(est.estimate.usd_if_live) + '. A dry run costs nothing.',
    'Bulk: ' + usd_(est.estimate.usd_if_bulk) + ' (half price; Google may take up to 24 hours).',
    'Budget left today: ' + usd_(left) + ' of ' + usd_(budget.limit_usd) + '.',
    budget.remaining_usd < 0
      ? overBudgetMessage_(left, nextUtcMidnight_())
      : 'After this batch: ' + usd_(budget.remaining_usd) + '. The budget resets at ' + formatResetTime_(nextUtcMidnight_()) + '.',
  ];
  ui.alert('Assets: estimate', lines.join('\n'), ui.ButtonSet.OK);
}

/**
 * The batch an action is about: the batch_id of the selected rows when they share one, otherwise
 * the most recent batch this Sheet submitted. Null (after saying why) when it is ambiguous.
 */
function batchForAction_(settings) {
  var sheet = SpreadsheetApp.getActiveSpreadsheet().getActiveSheet();
  var columns = readHeaders_(sheet);
  var ids = {};
  if (columns.batch_id) {
    readRows_(sheet, columns, selectedRowNumbers_(sheet)).forEach(function (row) {
      var id = String(row.cells.batch_id || '').trim();
      if (id) {
        ids[id] = true;
      }
    });
  }
  var distinct = Object.keys(ids);
  var ui = SpreadsheetApp.getUi();
  if (distinct.length > 1) {
    ui.alert('Assets', 'The selected rows belong to ' + distinct.length + ' batches; select rows of one batch.', ui.ButtonSet.OK);
    return null;
  }
  if (distinct.length === 1) {
    return distinct[0];
  }
  var followed = myFollowedBatches_();
  if (followed.length > 0) {
    return followed[followed.length - 1].id;
  }
  ui.alert('Assets', 'Select a row that has a batch_id.', ui.ButtonSet.OK);
  return null;
}

/**
 * Menu: the batch's progress page. The page needs a short-lived control token (browsers send no
 * Authorization header); it travels in the fragment, which never reaches a server log.
 */
function openProgressPage_() {
  var settings = requireSettings_();
  if (!settings) {
    return;
  }
  var id = batchForAction_(settings);
  if (!id) {
    return;
  }
  var answer = callApi_(settings, 'post', '/v1/batches/' + encodeURIComponent(id) + '/control-token');
  var link = '';
  if (!answer.problem && answer.body) {
    link = answer.body.page || answer.body.url || '';
    if (!link && answer.body.token) {
      link = settings.serviceUrl + '/b/' + id + '#control=' + encodeURIComponent(answer.body.token);
    }
  } else if (answer.problem && answer.problem.status !== 404 && answer.problem.status !== 405) {
    var ui = SpreadsheetApp.getUi();
    ui.alert('Assets', describeProblem_(answer.problem), ui.ButtonSet.OK);
    return;
  }
  if (!link) {
    // A service without control tokens: the page link submit answered, or the bare page.
    var known = knownBatch_(id);
    link = known && known.page ? known.page : settings.serviceUrl + '/b/' + id;
  }
  showLink_('Assets: progress of batch ' + id, link, 'Open the progress page');
}

/**
 * Menu: the reference manager, where references are uploaded and their stable URLs copied. Under
 * OIDC a browser cannot sign in by itself, so the page gets a one-hour token for the reference
 * library (POST /v1/refs/manager-token, in this user's name); like the control token it travels in
 * the fragment, which never reaches a server log.
 */
function openReferenceManager_() {
  var settings = requireSettings_();
  if (!settings) {
    return;
  }
  var answer = callApi_(settings, 'post', '/v1/refs/manager-token');
  var link = settings.refsUrl;
  if (!answer.problem && answer.body && answer.body.page) {
    link = answer.body.page;
  } else if (answer.problem && answer.problem.status !== 404 && answer.problem.status !== 405) {
    var ui = SpreadsheetApp.getUi();
    ui.alert('Assets', describeProblem_(answer.problem), ui.ButtonSet.OK);
    return;
  }
  // A service without manager tokens (404, 405): the bare page, signed in however it allows.
  showLink_('Assets: reference manager', link, 'Open the reference manager');
}

/** Menu: queue the batch's failed rows again (live or bulk: after CONFIRM). */
function retryFailedRows_() {
  var settings = requireSettings_();
  if (!settings) {
    return;
  }
  var id = batchForAction_(settings);
  if (!id) {
    return;
  }
  var ui = SpreadsheetApp.getUi();
  var view = callApi_(settings, 'get', '/v1/batches/' + encodeURIComponent(id));
  if (view.problem) {
    ui.alert('Assets', describeProblem_(view.problem), ui.ButtonSet.OK);
    return;
  }
  var failed = view.body.rows.filter(function (r) { return r.status === 'failed'; });
  if (failed.length === 0) {
    ui.alert('Assets', 'Batch ' + id + ' has no failed rows.', ui.ButtonSet.OK);
    return;
  }
  var missing = failed.reduce(function (n, r) { return n + Math.max(0, r.variants - r.images.length); }, 0);
  if (costsMoney_(view.body.run_mode)) {
    var bulk = view.body.run_mode === 'bulk';
    var response = ui.prompt(bulk ? 'Assets: retry bulk rows' : 'Assets: retry live rows',
      failed.length + ' failed rows, ' + missing + ' images to make again; stored images are not paid twice.\n' +
      (bulk ? 'They go to a new Google batch at the bulk price, done within 24 hours.\n' : '') + '\n' +
      'Type CONFIRM to retry them and spend the money.', ui.ButtonSet.OK_CANCEL);
    if (response.getSelectedButton() !== ui.Button.OK || response.getResponseText().trim() !== 'CONFIRM') {
      ui.alert('Assets', 'Not confirmed: nothing was sent.', ui.ButtonSet.OK);
      return;
    }
  }
  var answer = callApi_(settings, 'post', '/v1/batches/' + encodeURIComponent(id) + '/retry');
  if (answer.problem) {
    ui.alert('Assets', describeProblem_(answer.problem), ui.ButtonSet.OK);
    return;
  }
  var known = knownBatch_(id);
  var batch = {
    id: id,
    sheetId: known ? known.sheetId : SpreadsheetApp.getActiveSpreadsheet().getActiveSheet().getSheetId(),
    runMode: view.body.run_mode,
    page: known ? known.page : '',
    submittedAt: new Date(Date.now()).toISOString(),
  };
  followBatch_(batch);
  followOnce_(settings, batch); // the retried rows show `queued` now, not at the trigger's next run
  SpreadsheetApp.getActiveSpreadsheet().toast(failed.length + ' failed rows of batch ' + id + ' queued again.', 'Assets', 10);
}

/** Menu: cancel the rows of the batch that have not started; the follower writes `cancelled`. */
function cancelBatch_() {
  var settings = requireSettings_();
  if (!settings) {
    return;
  }
  var id = batchForAction_(settings);
  if (!id) {
    return;
  }
  var ui = SpreadsheetApp.getUi();
  var known = knownBatch_(id);
  var what = known && known.runMode === 'bulk'
    ? 'Google\'s batch is cancelled; images it made before that are kept and paid for, the rest of the money is released.'
    : 'Rows not yet started are cancelled and their money released; rows being generated finish.';
  var sure = ui.alert('Assets: cancel', 'Cancel batch ' + id + '? ' + what, ui.ButtonSet.YES_NO);
  if (sure !== ui.Button.YES) {
    return;
  }
  var answer = callApi_(settings, 'post', '/v1/batches/' + encodeURIComponent(id) + '/cancel');
  if (answer.problem) {
    ui.alert('Assets', describeProblem_(answer.problem), ui.ButtonSet.OK);
    return;
  }
  var batch = {
    id: id,
    sheetId: known ? known.sheetId : SpreadsheetApp.getActiveSpreadsheet().getActiveSheet().getSheetId(),
    runMode: known ? known.runMode : '',
    page: known ? known.page : '',
    submittedAt: known ? known.submittedAt : new Date(Date.now()).toISOString(),
  };
  followBatch_(batch);
  followOnce_(settings, batch); // the cancelled rows show it now
  SpreadsheetApp.getActiveSpreadsheet().toast('Batch ' + id + ' cancelled.', 'Assets', 10);
}

/**
 * Every problem of the selection in one sidebar: row, column, what is wrong, how to fix it.
 * @param {string} title
 * @param {RowProblem[]} problems
 */
function showProblems_(title, problems) {
  var template = HtmlService.createTemplateFromFile('Problems');
  template.data = { title: title, problems: problems };
  SpreadsheetApp.getUi().showSidebar(template.evaluate().setTitle('Assets'));
}

/** A dialog with one link (Apps Script cannot open a tab by itself). */
function showLink_(title, url, label) {
  var template = HtmlService.createTemplateFromFile('Link');
  template.data = { url: url, label: label };
  SpreadsheetApp.getUi().showModelessDialog(template.evaluate().setWidth(420).setHeight(140), title);
}

/** For the HTML templates: data as a JSON literal that is safe inside a <script> element. */
function jsonForHtml_(data) {
  return JSON.stringify(data).replace(/</g, '\\u003c').replace(/>/g, '\\u003e').replace(/&/g, '\\u0026')
    .replace(/\u2028/g, '\\u2028').replace(/\u2029/g, '\\u2029');
}
