//! Domain newtypes: each has a `parse` that refuses what cannot be right, so a value of the type is
//! valid by construction — also when it is read back from the store.

mod aspect_ratio;
mod batch_id;
mod money;
mod prompt;
mod ref_mode;
mod ref_url;
mod run_mode;
mod scene_id;
mod user_id;
mod variants;

pub use aspect_ratio::AspectRatio;
pub use batch_id::BatchId;
pub use money::Money;
pub use prompt::Prompt;
pub use ref_mode::RefMode;
pub use ref_url::{GS_REFUSAL, GsObject, RefScheme, RefUrl, RefUrlError, RefUrlPolicy};
pub use run_mode::RunMode;
pub use scene_id::SceneId;
pub use user_id::UserId;
pub use variants::Variants;

/// Why a value was refused; the validator turns it into a [`crate::problem::FieldError`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);
