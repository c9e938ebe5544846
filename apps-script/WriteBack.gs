/**
 * Write-back: a time-driven trigger follows every batch submitted from this Sheet
 * (GET /v1/batches/{id}) and writes each row's status, cost, error advice and image links as rows
 * finish.
 *
 * - Each batch being followed is one document property (`assetgen.batch.{id}`), so adding one
 *   (a submit) and removing one (the follower) never overwrite each other.
 * - One follower at a time (the script lock). It polls until a little before Apps Script's
 *   6-minute limit and then leaves the rest to the next trigger run; a run that is killed anyway
 *   loses nothing, because every run compares the sheet with the batch and writes only what
 *   differs.
 * - Rows are found by scene_id + batch_id on every pass, so sorting or moving rows mid-run is fine.
 * - A bulk batch waits at Google for up to a day: while its job is there it is looked at every
 *   BULK_LOOK_MS, and a trigger run with nothing due ends at once. Polling it like a live batch
 *   would keep a run going all day and use up the daily trigger runtime Apps Script allows.
 * - The trigger fires every minute while any batch needs looking at, and every
 *   BULK_TRIGGER_MINUTES while only bulk batches wait at Google (a run every minute that ends at
 *   once still counts against the daily triggers); following a batch puts it back to every minute.
 * - When nothing is left to follow, the trigger deletes itself.
 */

var FOLLOW_HANDLER = 'followBatches';
var BATCH_PREFIX = 'assetgen.batch.';
/** Stop polling this long after the run started: Apps Script kills a run at 6 minutes. */
var FOLLOW_BUDGET_MS = 4.5 * 60 * 1000;
var POLL_MS = 10 * 1000;
/** How often a bulk batch whose job Google holds (pending or running) is looked at. */
var BULK_LOOK_MS = 10 * 60 * 1000;
/** The trigger's cadence while a batch needs looking at, and while only bulk batches wait at
 * Google (everyMinutes takes 1, 5, 10, 15 or 30). */
var FOLLOW_TRIGGER_MINUTES = 1;
var BULK_TRIGGER_MINUTES = 10;
/** A look due this soon is made now: a trigger on the 10-minute cadence that fires a little early
 * would otherwise put it off by a whole period. */
var LOOK_SLACK_MS = 60 * 1000;
/** User property: the follow trigger this user has ({id, minutes}); a trigger cannot tell its cadence. */
var FOLLOW_TRIGGER_KEY = 'assetgen.followTrigger';
/** Attempts for one Sheets or UrlFetch call that fails with a quota or transient error. */
var BACKOFF_ATTEMPTS = 6;

/**
 * @typedef {Object} FollowedBatch
 * @property {string} id
 * @property {number} sheetId the sheet (tab) its rows are on
 * @property {string} runMode
 * @property {string} page the progress page link submit answered
 * @property {string} submittedAt ISO time
 * @property {string} [owner] who submitted it: only they may read it, so only their trigger follows it
 * @property {number} [lookAfter] epoch ms: a bulk batch at Google is not looked at before then
 */

/** @param {FollowedBatch} batch */
function followBatch_(batch) {
  batch.owner = currentUser_();
  PropertiesService.getDocumentProperties().setProperty(BATCH_PREFIX + batch.id, JSON.stringify(batch));
  ensureFollowTrigger_(FOLLOW_TRIGGER_MINUTES); // back to every minute, if it waited on bulk batches only
}

/** The account this run acts as (a trigger runs as whoever created it). */
function currentUser_() {
  return String(Session.getEffectiveUser().getEmail() || '').toLowerCase();
}

/**
 * The batches the current user follows. A batch belongs to its submitter (others get 404), so in a
 * Sheet shared by several people each one's trigger follows only their own batches.
 * @returns {FollowedBatch[]} oldest first
 */
function myFollowedBatches_() {
  var me = currentUser_();
  return followedBatches_().filter(function (b) { return !b.owner || !me || b.owner === me; });
}

/** @returns {FollowedBatch[]} every batch this Sheet follows, oldest first */
function followedBatches_() {
  var all = PropertiesService.getDocumentProperties().getProperties();
  return Object.keys(all)
    .filter(function (k) { return k.indexOf(BATCH_PREFIX) === 0; })
    .map(function (k) {
      try {
        return JSON.parse(all[k]);
      } catch (e) {
        return null;
      }
    })
    .filter(function (b) { return b && b.id; })
    .sort(function (a, b) { return String(a.submittedAt).localeCompare(String(b.submittedAt)); });
}

/** A batch this Sheet submitted, followed now or before (kept for the progress page link). */
function knownBatch_(id) {
  var raw = PropertiesService.getDocumentProperties().getProperty(BATCH_PREFIX + id) ||
    PropertiesService.getDocumentProperties().getProperty('assetgen.done.' + id);
  return raw ? JSON.parse(raw) : null;
}

function unfollowBatch_(id) {
  var props = PropertiesService.getDocumentProperties();
  var raw = props.getProperty(BATCH_PREFIX + id);
  if (raw) {
    props.setProperty('assetgen.done.' + id, raw);
  }
  props.deleteProperty(BATCH_PREFIX + id);
}

/**
 * This user's follow trigger fires every `minutes`: the one it has when it is at that cadence,
 * otherwise a new one (a trigger's cadence cannot be changed), and no other.
 * @param {number} minutes
 */
function ensureFollowTrigger_(minutes) {
  var props = PropertiesService.getUserProperties();
  var known = null;
  try {
    known = JSON.parse(props.getProperty(FOLLOW_TRIGGER_KEY) || 'null');
  } catch (e) {
    known = null;
  }
  var keepId = known && known.minutes === minutes ? String(known.id) : '';
  var kept = false;
  ScriptApp.getProjectTriggers().forEach(function (t) {
    if (t.getHandlerFunction() !== FOLLOW_HANDLER) {
      return;
    }
    if (!kept && t.getUniqueId() === keepId) {
      kept = true;
    } else {
      ScriptApp.deleteTrigger(t); // another cadence, or one too many (two runs that raced)
    }
  });
  if (!kept) {
    var trigger = ScriptApp.newTrigger(FOLLOW_HANDLER).timeBased().everyMinutes(minutes).create();
    props.setProperty(FOLLOW_TRIGGER_KEY, JSON.stringify({ id: trigger.getUniqueId(), minutes: minutes }));
  }
}

function deleteFollowTriggers_() {
  ScriptApp.getProjectTriggers().forEach(function (t) {
    if (t.getHandlerFunction() === FOLLOW_HANDLER) {
      ScriptApp.deleteTrigger(t);
    }
  });
  PropertiesService.getUserProperties().deleteProperty(FOLLOW_TRIGGER_KEY);
}

/**
 * The trigger's cadence for the batches left: every BULK_TRIGGER_MINUTES when each of them waits
 * at Google (a bulk batch not due for a look), every minute otherwise.
 */
function paceFollowTrigger_() {
  var waitingOnly = function () {
    var left = myFollowedBatches_();
    return left.length > 0 && !left.some(function (b) { return isDue_(b, Date.now() + LOOK_SLACK_MS); });
  };
  if (!waitingOnly()) {
    ensureFollowTrigger_(FOLLOW_TRIGGER_MINUTES);
    return;
  }
  ensureFollowTrigger_(BULK_TRIGGER_MINUTES);
  // A submit does not take the script lock: a batch it followed meanwhile may have found the
  // minute trigger just replaced. Looked at again, so such a batch is not left to the slow one.
  if (!waitingOnly()) {
    ensureFollowTrigger_(FOLLOW_TRIGGER_MINUTES);
  }
}

/** The trigger's handler (also safe to run by hand from the script editor). */
function followBatches() {
  var started = Date.now();
  var lock = LockService.getScriptLock();
  if (!lock.tryLock(1000)) {
    return; // another run is following; this one has nothing to add
  }
  try {
    var settings = getSettings_();
    for (;;) {
      var batches = myFollowedBatches_();
      if (batches.length === 0) {
        stopFollowing_();
        return;
      }
      var due = batches.filter(function (b) { return isDue_(b, Date.now() + LOOK_SLACK_MS); });
      if (due.length === 0) {
        paceFollowTrigger_();
        return; // every batch left waits at Google: a later trigger run looks when one is due
      }
      due.forEach(function (batch) {
        if (!settings.serviceUrl) {
          return;
        }
        var finished = followOnce_(settings, batch);
        if (finished) {
          unfollowBatch_(batch.id);
        }
      });
      SpreadsheetApp.flush(); // show this pass's rows now, not when the run ends
      var left = myFollowedBatches_();
      if (left.length === 0) {
        stopFollowing_();
        return;
      }
      if (!left.some(function (b) { return isDue_(b, Date.now() + POLL_MS); })) {
        paceFollowTrigger_();
        return; // only bulk batches waiting at Google are left: no reason to sleep here
      }
      if (Date.now() - started + POLL_MS > FOLLOW_BUDGET_MS) {
        paceFollowTrigger_();
        return; // the next trigger run resumes from what the sheet shows
      }
      Utilities.sleep(POLL_MS);
    }
  } finally {
    lock.releaseLock();
  }
}

/** Whether `batch` should be looked at by `at` (epoch ms): a bulk batch at Google not before its lookAfter. */
function isDue_(batch, at) {
  return !(Number(batch.lookAfter) > at);
}

/** Deletes the trigger; a batch submitted meanwhile gets it back (its submit may have seen the old one). */
function stopFollowing_() {
  deleteFollowTriggers_();
  if (myFollowedBatches_().length > 0) {
    ensureFollowTrigger_(FOLLOW_TRIGGER_MINUTES);
  }
}

/**
 * One look at one batch: fetch it, write what changed. True when the batch is over and every row
 * shows its end state.
 * @param {Settings} settings
 * @param {FollowedBatch} batch
 */
function followOnce_(settings, batch) {
  var answer = callApi_(settings, 'get', '/v1/batches/' + encodeURIComponent(batch.id));
  var sheet = sheetById_(batch.sheetId);
  if (!sheet) {
    return true; // the tab was deleted: nowhere to write
  }
  if (answer.problem) {
    if (answer.problem.code === 'BATCH_NOT_FOUND' || answer.problem.code === 'NOT_FOUND') {
      writeBatchProblem_(sheet, batch.id, answer.problem);
      return true;
    }
    return false; // unreachable or busy: the next pass tries again
  }
  var view = answer.body;
  writeBatchView_(sheet, view);
  var finished = ['queued', 'running'].indexOf(view.status) < 0;
  if (!finished) {
    lookAgainLater_(batch, view);
  }
  return finished;
}

/**
 * A bulk batch whose job Google holds changes only when Google is done: the next look is due in
 * BULK_LOOK_MS. Any other batch is due at once (a retried bulk batch's new job is being prepared).
 * @param {FollowedBatch} batch
 * @param {*} view BatchView (api.rs)
 */
function lookAgainLater_(batch, view) {
  var atGoogle = view.bulk && (view.bulk.state === 'pending' || view.bulk.state === 'running');
  var lookAfter = atGoogle ? Date.now() + BULK_LOOK_MS : 0;
  if (Number(batch.lookAfter || 0) === lookAfter) {
    return;
  }
  batch.lookAfter = lookAfter;
  // Onto what is stored now, not this run's copy: a retry may have just followed the batch anew.
  var props = PropertiesService.getDocumentProperties();
  var raw = props.getProperty(BATCH_PREFIX + batch.id);
  if (!raw) {
    return; // no longer followed: nothing to write
  }
  var stored = JSON.parse(raw);
  stored.lookAfter = lookAfter;
  props.setProperty(BATCH_PREFIX + batch.id, JSON.stringify(stored));
}

/** @returns {GoogleAppsScript.Spreadsheet.Sheet|null} */
function sheetById_(sheetId) {
  var sheets = SpreadsheetApp.getActiveSpreadsheet().getSheets();
  for (var i = 0; i < sheets.length; i++) {
    if (sheets[i].getSheetId() === sheetId) {
      return sheets[i];
    }
  }
  return null;
}

/**
 * Where each row of a batch is now: scene_id (case-insensitive, as the server compares them) and
 * batch_id, read afresh, never remembered row numbers.
 * @returns {{columns: Object<string, number>, rowsByScene: Object<string, number>, values: Array<Array<*>>, formulas: string[][]}}
 */
function locateRows_(sheet, batchId) {
  var columns = ensureOutputColumns_(sheet);
  var lastRow = sheet.getLastRow();
  var width = sheet.getLastColumn();
  var rowsByScene = /** @type {Object<string, number>} */ ({});
  if (lastRow <= HEADER_ROW || !columns.scene_id) {
    return { columns: columns, rowsByScene: rowsByScene, values: [], formulas: [] };
  }
  var range = sheet.getRange(HEADER_ROW + 1, 1, lastRow - HEADER_ROW, width);
  var values = withBackoff_(function () { return range.getValues(); }, 'reading the sheet');
  var formulas = withBackoff_(function () { return range.getFormulas(); }, 'reading the sheet');
  values.forEach(function (line, i) {
    if (String(line[columns.batch_id - 1]).trim() === batchId) {
      rowsByScene[String(line[columns.scene_id - 1]).trim().toLowerCase()] = HEADER_ROW + 1 + i;
    }
  });
  return { columns: columns, rowsByScene: rowsByScene, values: values, formulas: formulas };
}

/**
 * Writes every row of the view whose cells differ from what the sheet shows.
 * @param {GoogleAppsScript.Spreadsheet.Sheet} sheet
 * @param {*} view BatchView (api.rs)
 */
function writeBatchView_(sheet, view) {
  var at = locateRows_(sheet, view.batch_id);
  view.rows.forEach(function (row) {
    var r = at.rowsByScene[String(row.scene_id).toLowerCase()];
    if (!r) {
      return; // the row was deleted, or its batch_id overwritten: it is no longer this batch's
    }
    var current = at.values[r - HEADER_ROW - 1];
    var currentFormulas = at.formulas[r - HEADER_ROW - 1];
    writeRowCells_(sheet, at.columns, r, current, currentFormulas, row);
  });
}

/** The cells one row view asks for, written only where they differ (images first, status last). */
function writeRowCells_(sheet, columns, r, current, currentFormulas, row) {
  var images = row.images || [];
  var cell = function (name) { return current[columns[name] - 1]; };
  var label = images.map(function (_, i) { return 'v' + (i + 1); }).join(' · ');
  if (String(cell('images')) !== label) {
    withBackoff_(function () {
      var range = sheet.getRange(r, columns.images);
      if (images.length === 0) {
        range.clearContent();
        return;
      }
      var builder = SpreadsheetApp.newRichTextValue().setText(label);
      var offset = 0;
      images.forEach(function (url, i) {
        var text = 'v' + (i + 1);
        builder.setLinkUrl(offset, offset + text.length, url);
        offset += text.length + ' · '.length;
      });
      range.setRichTextValue(builder.build());
    }, 'writing image links');
  }
  var preview = images.length > 0 ? '=IMAGE("' + String(images[0]).replace(/"/g, '""') + '")' : '';
  if (String(currentFormulas[columns.preview - 1] || '') !== preview) {
    withBackoff_(function () {
      var range = sheet.getRange(r, columns.preview);
      if (preview) {
        range.setFormula(preview);
      } else {
        range.clearContent();
      }
    }, 'writing the preview');
  }
  writeProvenanceNote_(sheet, columns, r, cell, row);
  var error = row.error ? row.error.code + ': ' + row.error.detail + ' — ' + row.error.advice : '';
  if (String(cell('error')) !== error) {
    withBackoff_(function () { sheet.getRange(r, columns.error).setValue(error); }, 'writing the error');
  }
  var cost = Number(row.cost_usd || 0);
  if (cell('cost') === '' || Number(cell('cost')) !== cost) {
    withBackoff_(function () {
      // A bulk image is $0.0195: the fourth decimal shows when it is not a zero.
      sheet.getRange(r, columns.cost).setNumberFormat('$0.000#').setValue(cost);
    }, 'writing the cost');
  }
  if (String(cell('status')) !== row.status) {
    withBackoff_(function () { sheet.getRange(r, columns.status).setValue(row.status); }, 'writing the status');
  }
}

/** What a provenance note starts with: a `notes` cell that starts otherwise is the user's own. */
var PROVENANCE_NOTE = 'how it was made: ';

/**
 * In a `notes` column, when the sheet has one: links to how each image was made (its provenance:
 * prompt as sent, references, model and response id, price), opened by the image's own signature.
 * A note the user wrote is never overwritten; only an empty cell or one this wrote is.
 */
function writeProvenanceNote_(sheet, columns, r, cell, row) {
  if (!columns.notes) {
    return;
  }
  var current = String(cell('notes'));
  if (current !== '' && current.indexOf(PROVENANCE_NOTE) !== 0) {
    return;
  }
  var links = row.provenance || [];
  var labels = links.map(function (_, i) { return 'v' + (i + 1); });
  var text = links.length > 0 ? PROVENANCE_NOTE + labels.join(' · ') : '';
  if (current === text) {
    return;
  }
  withBackoff_(function () {
    var range = sheet.getRange(r, columns.notes);
    if (!text) {
      range.clearContent();
      return;
    }
    var builder = SpreadsheetApp.newRichTextValue().setText(text);
    var offset = PROVENANCE_NOTE.length;
    links.forEach(function (url, i) {
      builder.setLinkUrl(offset, offset + labels[i].length, url);
      offset += labels[i].length + ' · '.length;
    });
    range.setRichTextValue(builder.build());
  }, 'writing the provenance links');
}

/** A batch the service does not know (deleted bucket, another deployment): say so in its rows. */
function writeBatchProblem_(sheet, batchId, problem) {
  var at = locateRows_(sheet, batchId);
  Object.keys(at.rowsByScene).forEach(function (scene) {
    var r = at.rowsByScene[scene];
    withBackoff_(function () {
      sheet.getRange(r, at.columns.status).setValue('unknown');
      sheet.getRange(r, at.columns.error).setValue(problem.code + ': ' + problem.detail + ' — ' + (problem.advice || ''));
    }, 'writing the batch problem');
  });
}

/**
 * Runs `fn`, retrying with exponential backoff when Sheets or UrlFetch answer with a quota or a
 * transient error; any other error is thrown at once.
 * @template T
 * @param {function(): T} fn
 * @param {string} what for the error message
 * @returns {T}
 */
function withBackoff_(fn, what) {
  for (var attempt = 0; ; attempt++) {
    try {
      return fn();
    } catch (e) {
      if (attempt + 1 >= BACKOFF_ATTEMPTS || !isTransientError_(e)) {
        throw new Error(what + ': ' + errorText_(e));
      }
      Utilities.sleep(backoffMs_(attempt));
    }
  }
}

/** The messages Apps Script uses for quotas and passing failures. */
function isTransientError_(e) {
  return /too many|quota|rate limit|invoked too many times|service spreadsheets|timed? ?out|try again|temporar|unavailable|internal error|address unavailable/i
    .test(errorText_(e));
}
