//! The row-queue port: submit publishes one message per row; the queue pushes each to generate
//! until it is acknowledged. Adapters: the in-process push queue (local) and Pub/Sub (cloud).

mod envelope;
mod local_push;
mod pubsub;

pub use envelope::{
    DEAD_LETTER_DELIVERY_COUNT, DEAD_LETTER_SUBSCRIPTION, EnvelopeError, PushEnvelope, PushMessage,
    REQUEST_ID_ATTRIBUTE, RowMessage,
};
pub use local_push::{LocalPushConfig, LocalPushQueue, QueueStats};
pub use pubsub::{PubSubPolicy, PubSubQueue};

use async_trait::async_trait;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue unavailable: {0}")]
    Unavailable(String),
}

#[async_trait]
pub trait RowQueue: Send + Sync + std::fmt::Debug {
    /// Publishes the messages; `Ok` means every one of them will be delivered at least once.
    async fn publish(&self, messages: &[RowMessage]) -> Result<(), QueueError>;

    /// Whether the queue answers now (`/readyz`): a cheap look, no message sent.
    async fn ready(&self) -> Result<(), QueueError> {
        Ok(())
    }
}
