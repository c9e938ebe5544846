// The operations page's numbers, from one `/metrics-lite` answer: images per minute, the share of
// model calls answered 429, and spend, over the last hour minute by minute. No DOM here, so Node
// tests it without a browser.

const sum = (values) => values.reduce((a, b) => a + b, 0);
const numbers = (values) => (Array.isArray(values) ? values.map((v) => Number(v) || 0) : []);

/** The mean of every series of a histogram (`name{…}` keys) in seconds, or null without samples. */
export function histogramMean(histograms, name) {
  let count = 0;
  let total = 0;
  for (const [key, h] of Object.entries(histograms || {})) {
    if (key === name || key.startsWith(`${name}{`)) {
      count += Number(h.count) || 0;
      total += Number(h.sum) || 0;
    }
  }
  return count > 0 ? total / count : null;
}

/** What the page shows, from `/metrics-lite`. */
export function opsView(lite) {
  const hour = (lite && lite.last_hour) || {};
  const images = numbers(hour.images);
  const calls = numbers(hour.model_calls);
  const limited = numbers(hour.rate_limited);
  const spent = numbers(hour.spent_usd);
  const minutes = numbers(hour.minute_starts).map((s) => new Date(s * 1000));
  const callsLastHour = sum(calls);
  return {
    minutes,
    images,
    // A minute without model calls has no rate (drawn as a gap, not as 0 %).
    rate429: limited.map((n, i) => (calls[i] > 0 ? n / calls[i] : null)),
    spent,
    imagesThisMinute: images.length ? images[images.length - 1] : 0,
    imagesLastMinute: images.length > 1 ? images[images.length - 2] : 0,
    imagesLastHour: sum(images),
    callsLastHour,
    rateLimitedLastHour: sum(limited),
    rate429LastHour: callsLastHour > 0 ? sum(limited) / callsLastHour : 0,
    spendLastHour: sum(spent),
    queuePending: lite && lite.gauges && 'assetgen_queue_pending' in lite.gauges ? lite.gauges.assetgen_queue_pending : null,
    meanModelSeconds: histogramMean(lite && lite.histograms, 'assetgen_model_latency_seconds'),
    totals: (lite && lite.totals) || {},
  };
}

/** `12.5 %`, `0 %`, `—` for no value. */
export function formatPercent(share) {
  if (share === null || share === undefined || !Number.isFinite(share)) return '—';
  const p = share * 100;
  return `${p === 0 || p >= 10 ? p.toFixed(0) : p.toFixed(1)} %`;
}
