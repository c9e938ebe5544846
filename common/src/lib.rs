//! assetgen's domain and ports. No HTTP handler lives here: the functions' crates stay thin and
//! call into this crate.

pub mod api;
pub mod batch_spec;
pub mod batch_view;
pub mod cost;
pub mod domain;
pub mod layout;
pub mod limits;
pub mod problem;
pub mod refs;
pub mod state;
pub mod store;
pub mod events;
pub mod model;
pub mod queue;
pub mod auth;
pub mod budget;
pub mod config;
pub mod shim;
pub mod submission;
pub mod generation;
pub mod tail;
pub mod request;
