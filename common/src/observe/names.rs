//! Every metric assetgen exports, by name, with its help text. README.md lists the same names;
//! `/metrics` serves them in Prometheus' text format and `/metrics-lite` as one JSON object.

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

/// Requests answered, by matched route template (`/v1/batches/{id}`, never the raw path), method
/// and status.
pub const HTTP_REQUESTS: &str = "assetgen_http_requests_total";
/// Time to the response's head, by route.
pub const HTTP_DURATION: &str = "assetgen_http_request_duration_seconds";
/// Problem answers (RFC 7807), by error code.
pub const PROBLEMS: &str = "assetgen_problems_total";
/// Row deliveries, by outcome: succeeded, failed, already_handled, dropped, busy, retry, error,
/// dead_lettered.
pub const ROWS: &str = "assetgen_rows_total";
/// Images the model made, by run mode (dry_run, live).
pub const IMAGES: &str = "assetgen_images_generated_total";
/// Model calls, by run mode and result (ok, retryable, permanent).
pub const MODEL_CALLS: &str = "assetgen_model_calls_total";
/// Model calls answered 429 (rate limited).
pub const MODEL_RATE_LIMITED: &str = "assetgen_model_rate_limited_total";
/// How long one model call took, by run mode and result.
pub const MODEL_LATENCY: &str = "assetgen_model_latency_seconds";
/// References fetched (network, store or file; after retries), by result (ok, error).
pub const REFS_FETCHED: &str = "assetgen_refs_fetched_total";
/// References given to rows, by what became of them: used, duplicate, dropped_over_cap.
pub const REFS: &str = "assetgen_refs_total";
/// Submits refused because the day's budget would be exceeded.
pub const BUDGET_REFUSALS: &str = "assetgen_budget_refusals_total";
/// Ledger events written, by kind (reserve, spend, release) and whether new or a duplicate absorbed.
pub const LEDGER_EVENTS: &str = "assetgen_ledger_events_total";
/// Money spent by this process, in micro-dollars (new spend events only).
pub const SPENT_MICRODOLLARS: &str = "assetgen_spent_microdollars_total";
/// Store calls, by operation and result (ok, not_found, precondition_failed, unavailable, invalid).
pub const STORE_CALLS: &str = "assetgen_store_calls_total";
/// Messages published to the row queue, by result.
pub const QUEUE_PUBLISHED: &str = "assetgen_queue_published_total";
/// Messages of the local queue published and not yet acknowledged (`assetgen serve` only).
pub const QUEUE_PENDING: &str = "assetgen_queue_pending";
/// Pushes made by the local queue, and how many were nacked or dead-lettered (`assetgen serve` only).
pub const QUEUE_DELIVERIES: &str = "assetgen_queue_deliveries_total";
pub const QUEUE_NACKS: &str = "assetgen_queue_nacks_total";
pub const QUEUE_DEAD_LETTERED: &str = "assetgen_queue_dead_lettered_total";
/// Relay: event-stream clients connected now, and batch tails polling the store now.
pub const RELAY_CLIENTS: &str = "assetgen_relay_clients";
pub const RELAY_TAILS: &str = "assetgen_relay_tails";
/// Relay: bytes of events produced for clients and not yet taken by their sockets (held in this
/// process: hyper's write buffers), summed over clients; and events queued for clients and not yet
/// produced. Each client's share is bounded (see the relay's `unsent` module).
pub const RELAY_UNSENT_BYTES: &str = "assetgen_relay_unsent_bytes";
pub const RELAY_QUEUED_EVENTS: &str = "assetgen_relay_queued_events";
/// Connections dropped because their writes stayed blocked for the write stall limit.
pub const WRITES_STALLED: &str = "assetgen_http_writes_stalled_total";
/// Relay: store listings made by batch tails, by whether the look found a change (changed,
/// unchanged); and how many listings one tail made over its life (recorded when it closes).
pub const RELAY_TAIL_LISTINGS: &str = "assetgen_relay_tail_listings_total";
pub const RELAY_LISTINGS_PER_TAIL: &str = "assetgen_relay_listings_per_tail";

/// Registers the help texts with the installed recorder.
pub(super) fn describe() {
    describe_counter!(HTTP_REQUESTS, "Requests answered, by route template, method and status");
    describe_histogram!(HTTP_DURATION, Unit::Seconds, "Time to the response head, by route template");
    describe_counter!(PROBLEMS, "Problem (RFC 7807) answers, by error code");
    describe_counter!(ROWS, "Row deliveries, by outcome");
    describe_counter!(IMAGES, "Images made by the model, by run mode");
    describe_counter!(MODEL_CALLS, "Model calls, by run mode and result");
    describe_counter!(MODEL_RATE_LIMITED, "Model calls answered 429");
    describe_histogram!(MODEL_LATENCY, Unit::Seconds, "Duration of one model call, by run mode and result");
    describe_counter!(REFS_FETCHED, "References fetched, by result");
    describe_counter!(REFS, "References given to rows, by outcome (used, duplicate, dropped_over_cap)");
    describe_counter!(BUDGET_REFUSALS, "Submits refused by the daily budget");
    describe_counter!(LEDGER_EVENTS, "Ledger events written, by kind and new or duplicate");
    describe_counter!(SPENT_MICRODOLLARS, "Money spent by this process, in micro-dollars");
    describe_counter!(STORE_CALLS, "Object store calls, by operation and result");
    describe_counter!(QUEUE_PUBLISHED, "Row messages published, by result");
    describe_gauge!(QUEUE_PENDING, "Local queue: messages published and not yet acknowledged");
    describe_counter!(QUEUE_DELIVERIES, "Local queue: pushes made");
    describe_counter!(QUEUE_NACKS, "Local queue: pushes nacked");
    describe_counter!(QUEUE_DEAD_LETTERED, "Local queue: messages dead-lettered");
    describe_gauge!(RELAY_CLIENTS, "Relay: event-stream clients connected");
    describe_gauge!(RELAY_TAILS, "Relay: batch tails polling the store");
    describe_gauge!(RELAY_UNSENT_BYTES, "Relay: event bytes produced for clients and not yet taken by their sockets");
    describe_gauge!(RELAY_QUEUED_EVENTS, "Relay: events queued for clients and not yet produced");
    describe_counter!(WRITES_STALLED, "Connections dropped because their writes stayed blocked for the stall limit");
    describe_counter!(RELAY_TAIL_LISTINGS, "Relay: store listings by batch tails, by whether they found a change");
    describe_histogram!(RELAY_LISTINGS_PER_TAIL, "Relay: store listings one batch tail made over its life");
}
