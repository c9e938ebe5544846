//! The Pub/Sub push envelope (what Pub/Sub, its emulator, an Eventarc trigger's body and our local
//! queue POST to `/pubsub/rows`) and the row message it carries.

use crate::domain::BatchId;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What one message asks: generate this row of this batch. Carried in `data` as JSON (attributes
/// repeat it for filtering and logs, but are not relied on).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RowMessage {
    pub batch_id: BatchId,
    pub row: u32,
}

/// The attribute that carries the id of the request that queued the row (the submit, a retry),
/// so generate's logs and ledger events name it too.
pub const REQUEST_ID_ATTRIBUTE: &str = "request_id";

impl RowMessage {
    /// The message's attributes: the row it names, and the id of the request being served now
    /// (see [`crate::observe::with_request`]), if any.
    pub fn attributes(&self) -> BTreeMap<String, String> {
        let mut attributes = BTreeMap::from([
            ("batch_id".to_owned(), self.batch_id.to_string()),
            ("row".to_owned(), self.row.to_string()),
        ]);
        if let Some(id) = crate::observe::current_request_id() {
            attributes.insert(REQUEST_ID_ATTRIBUTE.to_owned(), id);
        }
        attributes
    }
}

/// Pub/Sub (and its emulator) send ids and times in both camelCase and snake_case, so both
/// spellings are separate fields here (serde aliases refuse a field given twice).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PushMessage {
    /// Base64 of the payload, JSON `{"batch_id": "…", "row": 0}`. Anything else is acknowledged
    /// and dropped: no redelivery can make it a row message.
    #[serde(default)]
    pub data: String,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    #[serde(default)]
    pub message_id: String,
    #[serde(default, rename = "message_id", skip_serializing)]
    message_id_snake: Option<String>,
    #[serde(default)]
    pub publish_time: String,
    #[serde(default, rename = "publish_time", skip_serializing)]
    publish_time_snake: Option<String>,
    /// Some senders put it here, real Pub/Sub at the envelope's top level; see [`PushEnvelope::delivery_attempt`].
    #[serde(default, deserialize_with = "crate::json_integer::option_u32", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<u64>, maximum = 4294967295_u64)]
    pub delivery_attempt: Option<u32>,
}

impl PushMessage {
    /// The message id, whichever spelling carried it.
    pub fn id(&self) -> &str {
        if self.message_id.is_empty() { self.message_id_snake.as_deref().unwrap_or_default() } else { &self.message_id }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PushEnvelope {
    pub message: PushMessage,
    #[serde(default)]
    pub subscription: String,
    /// Set by Pub/Sub when the subscription has a dead-letter policy (the emulator omits it).
    #[serde(default, deserialize_with = "crate::json_integer::option_u32", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<u64>, maximum = 4294967295_u64)]
    pub delivery_attempt: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("the push body is not a Pub/Sub envelope: {0}")]
    Envelope(String),
    #[error("message data is not base64: {0}")]
    Base64(String),
    #[error("message data is not a row message: {0}")]
    Payload(String),
}

/// Attribute names Pub/Sub adds to a dead-lettered copy.
pub const DEAD_LETTER_DELIVERY_COUNT: &str = "CloudPubSubDeadLetterSourceDeliveryCount";
pub const DEAD_LETTER_SUBSCRIPTION: &str = "CloudPubSubDeadLetterSourceSubscription";

impl PushEnvelope {
    pub fn new(subscription: &str, message_id: &str, row: &RowMessage, publish_time: String) -> Self {
        let data = STANDARD.encode(serde_json::to_vec(row).unwrap_or_default());
        Self {
            message: PushMessage {
                data,
                attributes: row.attributes(),
                message_id: message_id.to_owned(),
                message_id_snake: None,
                publish_time,
                publish_time_snake: None,
                delivery_attempt: None,
            },
            subscription: subscription.to_owned(),
            delivery_attempt: None,
        }
    }

    pub fn parse(body: &[u8]) -> Result<Self, EnvelopeError> {
        serde_json::from_slice(body).map_err(|e| EnvelopeError::Envelope(e.to_string()))
    }

    pub fn row_message(&self) -> Result<RowMessage, EnvelopeError> {
        let bytes = STANDARD.decode(self.message.data.trim()).map_err(|e| EnvelopeError::Base64(e.to_string()))?;
        serde_json::from_slice(&bytes).map_err(|e| EnvelopeError::Payload(e.to_string()))
    }

    /// The id of the request that queued this row, if the publisher said.
    pub fn request_id(&self) -> Option<&str> {
        self.message.attributes.get(REQUEST_ID_ATTRIBUTE).map(String::as_str).filter(|id| !id.is_empty())
    }

    pub fn delivery_attempt(&self) -> Option<u32> {
        self.delivery_attempt
            .or(self.message.delivery_attempt)
            .or_else(|| self.message.attributes.get(DEAD_LETTER_DELIVERY_COUNT).and_then(|n| n.parse().ok()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_emulator_fixture() {
        let body = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/pubsub-push-envelope.json"))
            .expect("fixture");
        let envelope = PushEnvelope::parse(&body).expect("envelope");
        assert_eq!(envelope.message.id(), "1");
        assert_eq!(envelope.message.publish_time, "2026-11-23T13:38:02.054Z");
        assert_eq!(envelope.subscription, "projects/proj/subscriptions/rows-push");
        assert_eq!(envelope.delivery_attempt(), None);
        // The fixture's data is `{"batch":"1"}`: an envelope, but not one of our row messages.
        assert!(matches!(envelope.row_message(), Err(EnvelopeError::Payload(_))));
    }

    #[test]
    fn round_trips_a_row_message_and_reads_delivery_attempts() {
        let row = RowMessage { batch_id: BatchId::new(), row: 42 };
        let mut envelope = PushEnvelope::new("projects/p/subscriptions/s", "7", &row, "2026-11-23T00:00:00Z".into());
        let parsed = PushEnvelope::parse(&serde_json::to_vec(&envelope).expect("json")).expect("parse");
        assert_eq!(parsed.message.id(), "7");
        let snake_only = br#"{"message":{"data":"","message_id":"9","publish_time":"t"},"subscription":"s"}"#;
        assert_eq!(PushEnvelope::parse(snake_only).expect("snake case").message.id(), "9");
        assert_eq!(parsed.row_message().expect("row"), row);
        envelope.message.attributes.insert(DEAD_LETTER_DELIVERY_COUNT.into(), "5".into());
        assert_eq!(envelope.delivery_attempt(), Some(5));
        envelope.delivery_attempt = Some(3);
        assert_eq!(envelope.delivery_attempt(), Some(3));
    }

    #[tokio::test]
    async fn the_request_being_served_travels_in_the_attributes() {
        let row = RowMessage { batch_id: BatchId::new(), row: 1 };
        assert_eq!(PushEnvelope::new("s", "1", &row, String::new()).request_id(), None);
        let context = crate::observe::RequestContext { request_id: "req-7".into() };
        let envelope =
            crate::observe::with_request(context, async { PushEnvelope::new("s", "1", &row, String::new()) }).await;
        let parsed = PushEnvelope::parse(&serde_json::to_vec(&envelope).expect("json")).expect("parse");
        assert_eq!(parsed.request_id(), Some("req-7"));
        assert_eq!(parsed.row_message().expect("row"), row, "the data is the row alone, as before");
    }

    #[test]
    fn garbage_is_an_envelope_error_not_a_panic() {
        assert!(matches!(PushEnvelope::parse(b"[1,2]"), Err(EnvelopeError::Envelope(_))));
        let mut e = PushEnvelope::new("s", "1", &RowMessage { batch_id: BatchId::new(), row: 0 }, String::new());
        e.message.data = "***".into();
        assert!(matches!(e.row_message(), Err(EnvelopeError::Base64(_))));
    }
}
