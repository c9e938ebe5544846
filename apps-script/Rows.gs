/**
 * Rows: the Sheet's columns are found by their header name in row 1, never by position, so a user
 * may reorder, insert or hide columns freely. Missing output columns are added at the right.
 */

/** Columns the user fills in. scene_id and prompt are required; the others have defaults. */
var INPUT_COLUMNS = ['scene_id', 'prompt', 'variants', 'refs', 'ref_mode', 'aspect_ratio'];
var REQUIRED_COLUMNS = ['scene_id', 'prompt'];
/** Columns the script writes; `preview` holds =IMAGE() of the first variant, `images` links to all. */
var OUTPUT_COLUMNS = ['status', 'preview', 'images', 'error', 'batch_id', 'cost'];
var HEADER_ROW = 1;

/** "Scene ID", "scene-id" and " scene_id " all name the scene_id column. */
function normalizeHeader_(name) {
  return String(name).trim().toLowerCase().replace(/[\s-]+/g, '_');
}

/**
 * Maps header names to 1-based column numbers; the first column with a name wins.
 * @param {GoogleAppsScript.Spreadsheet.Sheet} sheet
 * @returns {Object<string, number>}
 */
function readHeaders_(sheet) {
  var lastColumn = sheet.getLastColumn();
  var columns = /** @type {Object<string, number>} */ ({});
  if (lastColumn < 1) {
    return columns;
  }
  var names = withBackoff_(function () {
    return sheet.getRange(HEADER_ROW, 1, 1, lastColumn).getValues()[0];
  }, 'reading the header row');
  for (var i = 0; i < names.length; i++) {
    var name = normalizeHeader_(names[i]);
    if (name && !(name in columns)) {
      columns[name] = i + 1;
    }
  }
  return columns;
}

/**
 * The header map after adding whatever output column is missing, at the right of the last column.
 * @param {GoogleAppsScript.Spreadsheet.Sheet} sheet
 * @returns {Object<string, number>}
 */
function ensureOutputColumns_(sheet) {
  var columns = readHeaders_(sheet);
  var missing = OUTPUT_COLUMNS.filter(function (name) { return !(name in columns); });
  if (missing.length > 0) {
    var first = sheet.getLastColumn() + 1;
    withBackoff_(function () {
      sheet.getRange(HEADER_ROW, first, 1, missing.length).setValues([missing]);
    }, 'adding output columns');
    missing.forEach(function (name, i) { columns[name] = first + i; });
  }
  return columns;
}

/** The required input columns that are missing, as problems for the sidebar. */
function missingColumnProblems_(columns) {
  return REQUIRED_COLUMNS.filter(function (name) { return !(name in columns); }).map(function (name) {
    return {
      row: HEADER_ROW,
      column: name,
      message: 'There is no "' + name + '" column.',
      fix: 'Add a header named ' + name + ' in row ' + HEADER_ROW + ' above that column.',
    };
  });
}

/**
 * The sheet row numbers the user selected (every range of a multi-range selection), below the
 * header, in order and without repeats.
 * @param {GoogleAppsScript.Spreadsheet.Sheet} sheet
 * @returns {number[]}
 */
function selectedRowNumbers_(sheet) {
  var list = sheet.getActiveRangeList();
  var ranges = list ? list.getRanges() : [];
  var seen = {};
  var rows = [];
  ranges.forEach(function (range) {
    var first = range.getRow();
    var last = Math.min(range.getLastRow(), sheet.getLastRow());
    for (var r = Math.max(first, HEADER_ROW + 1); r <= last; r++) {
      if (!seen[r]) {
        seen[r] = true;
        rows.push(r);
      }
    }
  });
  return rows.sort(function (a, b) { return a - b; });
}

/**
 * @typedef {Object} SheetRow
 * @property {number} sheetRow 1-based row number in the sheet
 * @property {Object<string, *>} cells raw values by column name (inputs and outputs)
 */

/**
 * Reads every column named in `columns` for the given rows in one call. Blank rows (no input cell
 * filled in) are skipped.
 * @param {GoogleAppsScript.Spreadsheet.Sheet} sheet
 * @param {Object<string, number>} columns
 * @param {number[]} rowNumbers
 * @returns {SheetRow[]}
 */
function readRows_(sheet, columns, rowNumbers) {
  if (rowNumbers.length === 0) {
    return [];
  }
  var first = rowNumbers[0];
  var last = rowNumbers[rowNumbers.length - 1];
  var width = sheet.getLastColumn();
  var values = withBackoff_(function () {
    return sheet.getRange(first, 1, last - first + 1, width).getValues();
  }, 'reading rows');
  var out = [];
  rowNumbers.forEach(function (r) {
    var line = values[r - first];
    var cells = {};
    INPUT_COLUMNS.concat(OUTPUT_COLUMNS).forEach(function (name) {
      cells[name] = ''; // an optional column the sheet does not have reads as blank
    });
    Object.keys(columns).forEach(function (name) {
      var value = line[columns[name] - 1];
      cells[name] = value === undefined || value === null ? '' : value;
    });
    if (!isBlankRow_(cells)) {
      out.push({ sheetRow: r, cells: cells });
    }
  });
  return out;
}

function isBlankRow_(cells) {
  return INPUT_COLUMNS.every(function (name) {
    return !(name in cells) || String(cells[name]).trim() === '';
  });
}

/**
 * Writes the same outputs into many rows (status `queued` and the batch id after a submit), one
 * range write per output column.
 * @param {GoogleAppsScript.Spreadsheet.Sheet} sheet
 * @param {Object<string, number>} columns
 * @param {number[]} rowNumbers
 * @param {Object<string, *>} values by output column name
 */
function writeSameOutputs_(sheet, columns, rowNumbers, values) {
  rowNumbers.forEach(function (r) {
    Object.keys(values).forEach(function (name) {
      withBackoff_(function () {
        sheet.getRange(r, columns[name]).setValue(values[name]);
      }, 'writing ' + name);
    });
  });
}
