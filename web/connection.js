// The page's live link to `GET /v1/batches/{id}/events`, kept up across server restarts.
//
// - The relay closes a stream now and then with a `retry:` hint; EventSource reconnects by itself
//   and sends `Last-Event-ID`, so the first error after an open is left to it.
// - When that does not bring the stream back (the server is down, an HTTP error closed it), this
//   takes over: it closes the EventSource and opens a new one after 1 s, 2 s, 4 s… (capped at
//   30 s, with jitter), passing `?last_event_id=` so the relay resumes after the last event seen.
// - After `done` the relay ends the stream for good: `finish()` stops here, `resume()` starts again
//   (after a retry) from the last event id.

export const EVENT_NAMES = ['snapshot', 'row', 'batch', 'done'];
export const BACKOFF_BASE_MS = 1000;
export const BACKOFF_CAP_MS = 30000;

/** The pause before reconnect attempt `n` (1-based): doubling from 1 s, at most 30 s, ±20 % jitter. */
export function backoffDelay(n, random = Math.random) {
  const plain = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** Math.max(0, n - 1));
  return Math.min(BACKOFF_CAP_MS, Math.round(plain * (0.8 + 0.4 * random())));
}

export class LiveConnection {
  /**
   * @param {string} url the events URL
   * @param {{onEvent: Function, onState: Function, EventSourceImpl?: any, timers?: any, random?: Function}} options
   *   onEvent(name, data, id) for each event; onState(state, detail) with state one of
   *   'connecting', 'connected', 'reconnecting', 'finished', 'stopped'.
   */
  constructor(url, { onEvent, onState, EventSourceImpl, timers, random } = {}) {
    this.url = url;
    this.onEvent = onEvent || (() => {});
    this.onState = onState || (() => {});
    this.EventSourceImpl = EventSourceImpl || globalThis.EventSource;
    this.timers = timers || { setTimeout: (f, ms) => setTimeout(f, ms), clearTimeout: (h) => clearTimeout(h) };
    this.random = random || Math.random;
    this.source = null;
    this.lastEventId = null;
    this.failures = 0; // errors since the last open
    this.timer = null;
    this.state = 'idle';
    this.opens = 0;
  }

  start() {
    this.open('connecting');
  }

  /** Opens the stream again after `finish()`, from the last event id (e.g. after a retry). */
  resume() {
    if (this.source || this.timer) return;
    this.failures = 0;
    this.open('connecting');
  }

  /** The batch ended: the relay closed the stream after `done`; do not reconnect. */
  finish() {
    this.close();
    this.setState('finished');
  }

  stop() {
    this.close();
    this.setState('stopped');
  }

  streamUrl() {
    if (this.lastEventId === null) return this.url;
    const sep = this.url.includes('?') ? '&' : '?';
    return `${this.url}${sep}last_event_id=${encodeURIComponent(this.lastEventId)}`;
  }

  open(state) {
    this.close();
    this.setState(state, { attempt: this.failures });
    const source = new this.EventSourceImpl(this.streamUrl());
    this.source = source;
    this.opens += 1;
    source.onopen = () => {
      if (this.source !== source) return;
      this.failures = 0;
      this.setState('connected');
    };
    source.onerror = () => {
      if (this.source !== source) return;
      this.handleError(source);
    };
    for (const name of EVENT_NAMES) {
      source.addEventListener(name, (e) => {
        if (this.source !== source) return;
        this.remember(e.lastEventId);
        let data;
        try {
          data = JSON.parse(e.data);
        } catch {
          return;
        }
        this.onEvent(name, data, e.lastEventId);
      });
    }
  }

  // An id is the relay's opaque cursor (common/src/events.rs): each one says all the stream sent
  // so far, so the latest is the one to resume from. It is not always a number.
  remember(id) {
    if (id === undefined || id === null || id === '') return;
    this.lastEventId = String(id);
  }

  handleError(source) {
    this.failures += 1;
    const CONNECTING = this.EventSourceImpl.CONNECTING ?? 0;
    if (this.failures === 1 && source.readyState === CONNECTING) {
      // The stream ended (the relay's periodic close, or a dropped connection): EventSource
      // reconnects by itself, honouring the relay's retry hint and sending Last-Event-ID.
      this.setState('reconnecting', { attempt: this.failures, retryInMs: null });
      return;
    }
    // It did not come back: take over with exponential backoff.
    this.close();
    const delay = backoffDelay(this.failures, this.random);
    this.setState('reconnecting', { attempt: this.failures, retryInMs: delay });
    this.timer = this.timers.setTimeout(() => {
      this.timer = null;
      this.open('reconnecting');
    }, delay);
  }

  close() {
    if (this.timer) {
      this.timers.clearTimeout(this.timer);
      this.timer = null;
    }
    if (this.source) {
      const s = this.source;
      this.source = null;
      s.onopen = null;
      s.onerror = null;
      s.close();
    }
  }

  setState(state, detail = {}) {
    this.state = state;
    this.onState(state, detail);
  }
}
