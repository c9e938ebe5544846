//! assetgen's domain and ports. No HTTP handler lives here: the functions' crates stay thin and
//! call into this crate.

pub mod api;
pub mod auth;
pub mod batch_control;
pub mod batch_spec;
pub mod batch_view;
pub mod budget;
pub mod cloud;
pub mod config;
pub mod cost;
pub mod domain;
pub mod drain;
pub mod events;
pub mod generation;
pub mod layout;
pub mod lease;
pub mod ledger;
pub mod limits;
pub mod model;
pub mod observe;
pub mod open_index;
pub mod pipeline;
pub mod problem;
pub mod queue;
pub mod reconcile;
pub mod refs;
pub mod request;
pub mod settlement;
pub mod shim;
pub mod state;
pub mod store;
pub mod submission;
pub mod sweep;
pub mod tail;
#[cfg(feature = "testkit")]
pub mod testkit;
