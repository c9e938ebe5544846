// The progress page's state, fed by the relay's events (common/src/events.rs): `snapshot` and
// `done` carry a whole BatchView, `row` one RowView, `batch` the header (BatchProgress). Pure: no
// DOM, so it is tested in Node.

export const TERMINAL_BATCH = new Set(['succeeded', 'completed_with_failures', 'failed', 'cancelled']);
export const TERMINAL_ROW = new Set(['succeeded', 'failed', 'cancelled']);
export const LOG_LIMIT = 50;

export class BatchModel {
  constructor(batchId) {
    this.batchId = batchId;
    this.view = null; // BatchView without rows
    this.rows = new Map(); // row number → RowView
    this.lastEventId = null; // the latest event id (an opaque cursor)
    this.finishedAt = null; // when this page saw the batch end (ms)
    this.endedBeforeLoad = false;
    this.log = []; // newest first, at most LOG_LIMIT
  }

  get status() {
    return this.view ? this.view.status : 'loading';
  }

  get terminal() {
    return TERMINAL_BATCH.has(this.status);
  }

  get totals() {
    return this.view ? this.view.totals : null;
  }

  /** Rows in row order. */
  sortedRows() {
    return [...this.rows.values()].sort((a, b) => a.row - b.row);
  }

  /**
   * Applies one event; returns the log line it made. `id` is the SSE id, an opaque cursor that
   * covers everything the stream sent so far. Events are idempotent, so one seen twice after a
   * reconnect changes nothing.
   */
  apply(name, data, id, now = Date.now()) {
    if (id !== undefined && id !== null && id !== '') this.lastEventId = String(id);
    const wasTerminal = this.terminal;
    let text;
    switch (name) {
      case 'snapshot':
      case 'done': {
        this.setView(data);
        if (name === 'snapshot' && this.terminal && this.finishedAt === null) this.endedBeforeLoad = true;
        text =
          name === 'snapshot'
            ? `${data.totals.rows} rows, ${data.totals.images_done}/${data.totals.images_total} images, ${label(data.status)}`
            : `batch ended: ${label(data.status)}`;
        break;
      }
      case 'row': {
        this.rows.set(data.row, data);
        const images = `${data.images.length}/${data.variants} images`;
        const error = data.error ? ` — ${data.error.code}` : '';
        text = `${data.scene_id}: ${label(data.status)} (${images}, attempt ${data.attempts})${error}`;
        break;
      }
      case 'batch': {
        if (this.view) {
          // `ended_at` comes with the batch event that ends the batch, and goes with a retry's.
          const { ended_at: _gone, ...rest } = this.view;
          this.view = { ...rest, status: data.status, totals: data.totals, cost_usd: data.cost_usd };
          if (data.ended_at) this.view.ended_at = data.ended_at;
          // A bulk batch's job moves at Google while no row does: the batch event says where it is.
          if (data.bulk) this.view.bulk = data.bulk;
        }
        const t = data.totals;
        const job = data.bulk ? `${bulkText(data.bulk)}; ` : '';
        text = `${job}${t.images_done}/${t.images_total} images, ${t.succeeded} done, ${t.failed} failed, ${t.cancelled} cancelled`;
        break;
      }
      default:
        text = name;
    }
    if (!wasTerminal && this.terminal && this.finishedAt === null && !this.endedBeforeLoad) this.finishedAt = now;
    if (!this.terminal) {
      // Running again (a retry): the clock runs again too.
      this.finishedAt = null;
      this.endedBeforeLoad = false;
    }
    this.addLog(name, text, id, now);
    return text;
  }

  setView(view) {
    const { rows, ...rest } = view;
    this.view = rest;
    this.rows = new Map(rows.map((r) => [r.row, r]));
  }

  addLog(kind, text, id = null, now = Date.now()) {
    this.log.unshift({ kind, text, id: id === undefined ? null : id, at: now });
    if (this.log.length > LOG_LIMIT) this.log.length = LOG_LIMIT;
  }

  /**
   * Header figures: what the page shows above the rows. `elapsedMs` is the time since the batch
   * was accepted while it runs, and once it ended its duration: from the server's `ended_at` (the
   * stored time its last row ended, so a page opened later shows it too), or where a server does
   * not send it, from when this page saw it end (unknown if it ended before the page opened).
   */
  summary(now = Date.now()) {
    const v = this.view;
    if (!v) return null;
    const t = v.totals;
    const created = Date.parse(v.created_at);
    const endedAt = this.terminal && v.ended_at ? Date.parse(v.ended_at) : NaN;
    let elapsedMs;
    if (Number.isFinite(endedAt)) elapsedMs = Math.max(0, endedAt - created);
    else if (this.endedBeforeLoad) elapsedMs = null;
    else elapsedMs = Math.max(0, (this.finishedAt ?? now) - created);
    return {
      status: v.status,
      rows: t.rows,
      imagesDone: t.images_done,
      imagesTotal: t.images_total,
      failures: t.failed,
      cancelled: t.cancelled,
      running: t.running,
      queued: t.queued,
      succeeded: t.succeeded,
      costUsd: v.cost_usd,
      // What each stored image cost (the batch's spend over its images), and what one would cost live.
      costPerImageUsd: t.images_done > 0 ? v.cost_usd / t.images_done : null,
      livePerImageUsd: v.estimate.images > 0 ? v.estimate.usd_if_live / v.estimate.images : null,
      // Through Gemini's Batch API: half the live price (from the accepted estimate).
      bulkPerImageUsd: v.estimate.images > 0 && v.estimate.usd_if_bulk ? v.estimate.usd_if_bulk / v.estimate.images : null,
      bulkState: v.bulk ? v.bulk.state : null,
      bulkText: v.bulk ? bulkText(v.bulk) : null,
      ended: this.terminal,
      estimateUsd: v.estimate.usd,
      estimateIfLiveUsd: v.estimate.usd_if_live,
      runMode: v.run_mode,
      model: v.model,
      elapsedMs,
      etaMs: this.terminal ? 0 : eta(elapsedMs, t.images_done, t.images_total),
      percent: t.images_total > 0 ? Math.round((100 * t.images_done) / t.images_total) : 0,
    };
  }

  /** Every image slot, in row then variant order: a link once the image exists. */
  gallery() {
    const tiles = [];
    for (const r of this.sortedRows()) {
      for (let v = 1; v <= r.variants; v += 1) {
        const url = r.images[v - 1] || null;
        // A row that ended without this image will not get it: no empty slot for it.
        if (!url && TERMINAL_ROW.has(r.status)) continue;
        const provenance = (r.provenance || [])[v - 1] || null;
        tiles.push({ key: `${r.row}-${v}`, row: r.row, sceneId: r.scene_id, variant: v, url, provenance, status: r.status });
      }
    }
    return tiles;
  }

  /** Statuses by row number: what a person compares with `GET /v1/batches/{id}`. */
  rowStatuses() {
    return Object.fromEntries(this.sortedRows().map((r) => [r.row, r.status]));
  }
}

/**
 * Time left, from the pace so far: images still to make × time per image made. Unknown (null)
 * before the first image or when the elapsed time is unknown.
 */
export function eta(elapsedMs, done, total) {
  if (elapsedMs === null || elapsedMs === undefined || !(done > 0) || !(total > 0)) return null;
  if (done >= total) return 0;
  return (elapsedMs / done) * (total - done);
}

export function label(status) {
  return String(status || '').replaceAll('_', ' ');
}

/** `14:02 UTC` of an RFC 3339 time, as the CLI says it. */
function clockUtc(rfc3339) {
  const d = new Date(rfc3339);
  if (Number.isNaN(d.getTime())) return null;
  const two = (n) => String(n).padStart(2, '0');
  return `${two(d.getUTCHours())}:${two(d.getUTCMinutes())} UTC`;
}

/**
 * Where a bulk batch's job stands at Google (a BulkView, common/src/bulk.rs), in the CLI's words:
 * "Waiting for Google's batch, submitted 14:02 UTC", "Google is running the batch, …", and once
 * it ended "Google's batch succeeded|failed|expired|cancelled".
 */
export function bulkText(bulk) {
  const at = bulk.submitted_at && clockUtc(bulk.submitted_at) ? `, submitted ${clockUtc(bulk.submitted_at)}` : '';
  const cancelling = bulk.cancel_requested ? ' (cancelling)' : '';
  switch (bulk.state) {
    case 'preparing':
      return `Preparing Google's batch${cancelling}`;
    case 'pending':
      return `Waiting for Google's batch${at}${cancelling}`;
    case 'running':
      return `Google is running the batch${at}${cancelling}`;
    default:
      return `Google's batch ${label(bulk.state)}`;
  }
}

/** A price per image: `$0.0195` (bulk prices have four places), `$0.039`. */
export function formatPrice(usd) {
  const v = Number(usd) || 0;
  if (v === 0) return '$0.00';
  if (Math.abs(v) >= 0.1) return `$${v.toFixed(2)}`;
  return `$${Number(v.toFixed(4)).toString().replace(/^(\d+\.\d{1,2})$/, (m) => Number(m).toFixed(3))}`;
}
