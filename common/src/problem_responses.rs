//! The problem answers (`application/problem+json`) that several operations of the HTTP contract
//! share, as utoipa [`IntoResponses`] types: an operation lists its own answers in
//! `#[utoipa::path(responses(...))]` and then the group its usual failures belong to, so each
//! shared failure is described once, in one wording, and `/openapi.json` stays generated from code.
//!
//! A group is a table of status and description: each answer is the [`Problem`] schema under
//! `application/problem+json`, the same response a `(status = …, description = …, body = Problem,
//! content_type = "application/problem+json")` tuple declares.

use crate::problem::{PROBLEM_CONTENT_TYPE, Problem};
use std::collections::BTreeMap;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::{ComponentsBuilder, ContentBuilder, OpenApi, Ref, RefOr};
use utoipa::{IntoResponses, PartialSchema, ToSchema};

const NOT_SIGNED_IN: &str = "Not signed in, or the token is not valid";
const NOT_ALLOWED: &str = "Signed in, but not allowed to do this";
const UNAVAILABLE: &str = "Storage or sign-in checks unavailable: try again";
const NO_SUCH_BATCH: &str = "No such batch, or not yours: the same answer";

/// What a route open to any signed-in user (the budget, an estimate, the reference library) can
/// answer besides its own: not signed in, not on the allow-list, the store or the key set down.
#[derive(Debug)]
pub struct SignedInProblems;

impl IntoResponses for SignedInProblems {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        problems(&[(401, NOT_SIGNED_IN), (403, NOT_ALLOWED), (503, UNAVAILABLE)])
    }
}

/// What a route on one batch can answer besides its own: the batch is missing, or someone else's
/// (the same 404, so a batch id tells a stranger nothing), or the store is down. Who may call
/// differs by route, so 401 and 403 stay with each route.
#[derive(Debug)]
pub struct BatchProblems;

impl IntoResponses for BatchProblems {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        problems(&[(404, NO_SUCH_BATCH), (503, UNAVAILABLE)])
    }
}

/// What a route that reads one batch (its status, its event stream) can answer besides its own:
/// [`BatchProblems`], and neither a sign-in nor a page link that opens the batch.
#[derive(Debug)]
pub struct BatchReadProblems;

impl IntoResponses for BatchReadProblems {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let mut answers = BatchProblems::responses();
        answers.append(&mut problems(&[(401, "Not signed in, or a bad link")]));
        answers
    }
}

/// What a route that opens one stored object (an image, its provenance, a reference) to the holder
/// of its link (`?sig=`) or to a signed-in caller can answer besides its own: neither, or the
/// store or the key set down. What is not found differs by route, so 404 stays with each route.
#[derive(Debug)]
pub struct SignedLinkProblems;

impl IntoResponses for SignedLinkProblems {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        problems(&[(401, "No signature and not signed in"), (503, UNAVAILABLE)])
    }
}

/// Cancel and retry of a batch: [`BatchProblems`], a caller with neither the owner's sign-in nor
/// the batch's control token, and an `Idempotency-Key` that cannot be used.
#[derive(Debug)]
pub struct BatchControlProblems;

impl IntoResponses for BatchControlProblems {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let mut answers = BatchProblems::responses();
        answers.append(&mut problems(&[
            (401, "Not signed in, or a bad token"),
            (422, "The Idempotency-Key is not printable ASCII, or was used for another request"),
        ]));
        answers
    }
}

/// A Pub/Sub push (generate's `/pubsub/*`) that is not one: Pub/Sub would never send it, so no
/// redelivery can help. Whether the push waits (429, 503) differs by route.
#[derive(Debug)]
pub struct PushProblems;

impl IntoResponses for PushProblems {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        problems(&[
            (400, "Not a push envelope"),
            (401, "No valid push token"),
            (403, "A token that may not push"),
            (413, "Larger than 64 KiB: not from Pub/Sub"),
        ])
    }
}

/// One [`Problem`] answer per status, described as given.
fn problems(answers: &[(u16, &str)]) -> BTreeMap<String, RefOr<Response>> {
    answers
        .iter()
        .map(|(status, description)| {
            let body = ContentBuilder::new().schema(Some(Ref::from_schema_name(Problem::name()))).build();
            let response = ResponseBuilder::new().description(*description).content(PROBLEM_CONTENT_TYPE, body).build();
            (status.to_string(), RefOr::T(response))
        })
        .collect()
}

/// Puts the [`Problem`] schema, and those it refers to, into `doc`'s components. utoipa collects a
/// schema only from an operation's `body = …`, never from an [`IntoResponses`] type, so an
/// operation whose every problem came from a group above would otherwise refer to no schema.
pub fn add_problem_schema(doc: &mut OpenApi) {
    let mut schemas = vec![(Problem::name().into_owned(), Problem::schema())];
    Problem::schemas(&mut schemas);
    let components = doc.components.get_or_insert_with(|| ComponentsBuilder::new().build());
    for (name, schema) in schemas {
        components.schemas.entry(name).or_insert(schema);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_answers_the_problem_schema_as_problem_json_under_each_status() {
        let answers = BatchControlProblems::responses();
        assert_eq!(answers.keys().collect::<Vec<_>>(), ["401", "404", "422", "503"]);
        let json = serde_json::to_value(&answers["404"]).expect("json");
        assert_eq!(json["description"], NO_SUCH_BATCH);
        assert_eq!(json["content"][PROBLEM_CONTENT_TYPE]["schema"]["$ref"], "#/components/schemas/Problem");
    }

    #[test]
    fn the_problem_schema_is_added_once_with_what_it_refers_to() {
        let mut doc = OpenApi::default();
        add_problem_schema(&mut doc);
        let schemas = &doc.components.as_ref().expect("components").schemas;
        assert!(schemas.contains_key("Problem") && schemas.contains_key("ErrorCode"), "{:?}", schemas.keys());
        let count = schemas.len();
        add_problem_schema(&mut doc);
        assert_eq!(doc.components.expect("components").schemas.len(), count);
    }
}
