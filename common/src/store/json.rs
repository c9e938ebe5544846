//! JSON objects in the store, and the compare-and-swap loop every state update goes through.

use super::{Generation, ObjectStore, Precondition, StoreError};
use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A decoded JSON object with the generation it was read at (the CAS token for the next write).
#[derive(Debug, Clone, PartialEq)]
pub struct JsonObject<T> {
    pub value: T,
    pub generation: Generation,
}

pub async fn read_json<T: DeserializeOwned>(store: &dyn ObjectStore, name: &str) -> Result<JsonObject<T>, StoreError> {
    let object = store.get(name).await?;
    let value = serde_json::from_slice(&object.body)
        .map_err(|e| StoreError::Unavailable(format!("{name} holds invalid JSON: {e}")))?;
    Ok(JsonObject { value, generation: object.meta.generation })
}

pub async fn write_json<T: Serialize>(
    store: &dyn ObjectStore,
    name: &str,
    value: &T,
    when: Precondition,
) -> Result<Generation, StoreError> {
    let body =
        serde_json::to_vec_pretty(value).map_err(|e| StoreError::Unavailable(format!("cannot encode {name}: {e}")))?;
    store.put(name, Bytes::from(body), "application/json", when).await
}

/// Most times a CAS update re-reads after losing a race before giving up: generous, since each
/// loss means someone else made progress.
const MAX_CAS_ROUNDS: u32 = 64;

/// A short random pause after a lost race, growing with the losses (capped at 100 ms), so
/// writers that collided do not collide again in lock-step on a hot object (a day's budget).
async fn back_off(round: u32) {
    use rand::Rng;
    let cap_ms = 2u64.saturating_pow(round.min(7)).min(100);
    let pause = rand::rng().random_range(0..=cap_ms);
    tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
}

/// Read-modify-write with compare-and-swap: `change` sees the current value and returns the new
/// one, or `None` to leave it as it is. On a lost race the object is read again and `change` runs
/// again on the fresh value, so no update is ever lost. Returns the value as stored.
pub async fn update_json<T, E, F>(store: &dyn ObjectStore, name: &str, mut change: F) -> Result<JsonObject<T>, E>
where
    T: Serialize + DeserializeOwned,
    E: From<StoreError>,
    F: FnMut(&T) -> Result<Option<T>, E>,
{
    let mut rounds = 0;
    loop {
        let current: JsonObject<T> = read_json(store, name).await?;
        let Some(next) = change(&current.value)? else { return Ok(current) };
        match write_json(store, name, &next, Precondition::GenerationMatch(current.generation)).await {
            Ok(generation) => return Ok(JsonObject { value: next, generation }),
            Err(StoreError::PreconditionFailed(_)) if rounds < MAX_CAS_ROUNDS => {
                rounds += 1;
                back_off(rounds).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}
