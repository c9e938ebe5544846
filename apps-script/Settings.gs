/**
 * Settings: where the service is, where the reference manager is, which run mode is the default,
 * and how many rows one batch may have. They live in the document's properties, so everyone who
 * opens this Sheet talks to the same deployment.
 */

/** Property names, prefixed so they cannot clash with another script's. */
var SETTING_KEYS = {
  serviceUrl: 'assetgen.serviceUrl',
  refsUrl: 'assetgen.refsUrl',
  defaultRunMode: 'assetgen.defaultRunMode',
  maxRows: 'assetgen.maxRows',
};

/** The run modes the menu's first Generate item can default to (the service's RunMode). */
var RUN_MODES = ['dry_run', 'live', 'bulk'];

/** The server's default ASSETGEN_MAX_ROWS (common/src/limits.rs). */
var DEFAULT_MAX_ROWS = 10;

/**
 * @typedef {Object} Settings
 * @property {string} serviceUrl base URL of the deployment, no trailing slash
 * @property {string} refsUrl the reference manager's page
 * @property {string} defaultRunMode dry_run, live or bulk: the menu's first Generate item
 * @property {number} maxRows rows per batch the server accepts (its ASSETGEN_MAX_ROWS)
 */

/** @returns {Settings} the stored settings, with defaults for the optional ones. */
function getSettings_() {
  var props = PropertiesService.getDocumentProperties();
  var serviceUrl = props.getProperty(SETTING_KEYS.serviceUrl) || '';
  var maxRows = parseInt(props.getProperty(SETTING_KEYS.maxRows) || '', 10);
  return {
    serviceUrl: serviceUrl,
    refsUrl: props.getProperty(SETTING_KEYS.refsUrl) || (serviceUrl ? serviceUrl + '/refs' : ''),
    defaultRunMode: RUN_MODES.indexOf(String(props.getProperty(SETTING_KEYS.defaultRunMode))) >= 0
      ? String(props.getProperty(SETTING_KEYS.defaultRunMode)) : 'dry_run',
    maxRows: maxRows > 0 ? maxRows : DEFAULT_MAX_ROWS,
  };
}

/**
 * The settings when the required ones are filled in; otherwise the Settings dialog opens (instead
 * of the action failing) and the caller stops.
 * @returns {Settings|null}
 */
function requireSettings_() {
  var settings = getSettings_();
  if (!settings.serviceUrl) {
    showSettingsDialog_('Fill in the service URL first; then run the menu item again.');
    return null;
  }
  return settings;
}

/** Menu: Assets › Settings. */
function openSettings() {
  showSettingsDialog_('');
}

/** @param {string} notice shown above the form (why it opened) */
function showSettingsDialog_(notice) {
  var template = HtmlService.createTemplateFromFile('Settings');
  template.data = { settings: getSettings_(), notice: notice };
  var html = template.evaluate().setWidth(460).setHeight(420);
  SpreadsheetApp.getUi().showModalDialog(html, 'Assets: settings');
}

/**
 * Called by the Settings dialog (google.script.run). Checks every field and stores them all, or
 * none; answers what is wrong per field so the dialog can show it.
 * @param {{serviceUrl?: string, refsUrl?: string, defaultRunMode?: string, maxRows?: (string|number)}} form
 * @returns {{ok: boolean, errors: Object<string, string>}}
 */
function saveSettings(form) {
  var errors = /** @type {Object<string, string>} */ ({});
  var serviceUrl = String((form && form.serviceUrl) || '').trim().replace(/\/+$/, '');
  if (!serviceUrl) {
    errors.serviceUrl = 'The service URL is required, e.g. https://assetgen-submit-abc-ew.a.run.app';
  } else if (!/^https?:\/\/[^\s/?#]+(\/[^\s?#]*)?$/i.test(serviceUrl)) {
    errors.serviceUrl = 'Use the https:// address of the service, without ? or #.';
  }
  var refsUrl = String((form && form.refsUrl) || '').trim();
  if (refsUrl && !/^https?:\/\/\S+$/i.test(refsUrl)) {
    errors.refsUrl = 'Use the https:// address of the reference manager, or leave it empty for SERVICE/refs.';
  }
  var mode = String((form && form.defaultRunMode) || 'dry_run').trim();
  if (RUN_MODES.indexOf(mode) < 0) {
    errors.defaultRunMode = 'Choose dry_run, live or bulk (half price, results within 24 hours).';
  }
  var rawMax = String((form && form.maxRows) || DEFAULT_MAX_ROWS).trim();
  var maxRows = Number(rawMax);
  if (!/^\d+$/.test(rawMax) || maxRows < 1 || maxRows > 1000) {
    errors.maxRows = 'Use a whole number from 1 to 1000: the server\'s ASSETGEN_MAX_ROWS (10 unless changed).';
  }
  if (Object.keys(errors).length > 0) {
    return { ok: false, errors: errors };
  }
  var values = /** @type {Object<string, string>} */ ({});
  values[SETTING_KEYS.serviceUrl] = serviceUrl;
  values[SETTING_KEYS.defaultRunMode] = mode;
  values[SETTING_KEYS.maxRows] = String(maxRows);
  var props = PropertiesService.getDocumentProperties();
  props.setProperties(values);
  if (refsUrl) {
    props.setProperty(SETTING_KEYS.refsUrl, refsUrl);
  } else {
    props.deleteProperty(SETTING_KEYS.refsUrl);
  }
  return { ok: true, errors: {} };
}

/**
 * Run from the script editor (or Assets › Settings › the link in the dialog): shows the `aud` of
 * this script's identity token, i.e. the OAuth client id the service must list in
 * ASSETGEN_OIDC_AUDIENCE, and the email it carries.
 * @returns {{aud: string, email: string}}
 */
function showOAuthClientId() {
  var claims = identityClaims_();
  var ui = SpreadsheetApp.getUi();
  ui.alert('Assets: this script\'s identity',
    'OAuth client id (aud): ' + claims.aud + '\nEmail: ' + claims.email + ' (verified: ' + claims.email_verified + ')\n\n' +
    'The service must accept this audience: add it to ASSETGEN_OIDC_AUDIENCE (a comma-separated list) ' +
    'and the email (or its @domain) to ASSETGEN_ALLOWED.', ui.ButtonSet.OK);
  return { aud: String(claims.aud), email: String(claims.email) };
}

/** The claims of ScriptApp.getIdentityToken(), read (not verified: only the service verifies). */
function identityClaims_() {
  var payload = ScriptApp.getIdentityToken().split('.')[1] || '';
  while (payload.length % 4 !== 0) {
    payload += '=';
  }
  return JSON.parse(Utilities.newBlob(Utilities.base64DecodeWebSafe(payload)).getDataAsString());
}
