//! Reference images: where they may come from, fetching them, and merging a row's with the global ones.

pub mod address_policy;
pub mod fetch;
pub mod merge;
