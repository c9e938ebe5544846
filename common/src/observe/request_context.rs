//! The request id a piece of work belongs to, where no parameter could carry it: set by the shim
//! for every HTTP request (its `X-Request-Id`) and by generate for every row (the id of the submit
//! that queued it), read where a message's attributes or a ledger event are made.

use std::future::Future;

/// What work knows about the request it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestContext {
    pub request_id: String,
}

tokio::task_local! {
    static CURRENT: RequestContext;
}

/// Runs `work` as part of `context`'s request.
pub async fn with_request<F: Future>(context: RequestContext, work: F) -> F::Output {
    CURRENT.scope(context, work).await
}

/// The request id of the work running now, if it runs for one.
pub fn current_request_id() -> Option<String> {
    CURRENT.try_with(|c| c.request_id.clone()).ok().filter(|id| !id.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_id_is_there_inside_the_scope_only() {
        assert_eq!(current_request_id(), None);
        let inside = with_request(RequestContext { request_id: "r-1".into() }, async { current_request_id() }).await;
        assert_eq!(inside.as_deref(), Some("r-1"));
        assert_eq!(current_request_id(), None);
    }
}
