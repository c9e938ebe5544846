//! Who may do what to one batch. A batch belongs to the user who submitted it (the manifest's
//! `user`); submit's and relay's batch routes all decide here:
//!
//! | caller | read (status, events, images) | cancel | retry | control token |
//! |---|---|---|---|---|
//! | the owner (a bearer identity) | yes | yes | yes | yes |
//! | an admin (`ASSETGEN_ADMINS`) | yes | yes | no: a retry spends the owner's budget | no |
//! | a page link (read token) | yes | no | no | no |
//! | a control token, as `Authorization: Bearer` | yes | yes | yes | no |
//! | anyone else | 404 | 404 | 404 | 404 |
//!
//! A reference manager token (`/refs#token=…`) is not in the table: it opens no batch at all
//! ([`Access::authenticate_refs`]).
//!
//! "Anyone else" gets exactly the answer a batch that does not exist gets, so nobody learns that
//! someone else's id exists. Image links (`?sig=`) grant one image and are checked by the relay
//! before any of this ([`super::LinkSigner`]).

use super::{AllowList, Authenticator, CapabilityTokens, Grant, Identity, LinkSigner, Scope, bearer_token};
use crate::batch_view::load_manifest;
use crate::domain::BatchId;
use crate::problem::{ErrorCode, Problem};
use crate::store::ObjectStore;
use axum::http::{HeaderMap, header};
use std::sync::Arc;

/// What a request wants to do to a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchAction {
    /// Status, events, images.
    Read,
    Cancel,
    Retry,
    /// `POST /v1/batches/{id}/control-token`: only the owner, signed in.
    IssueControlToken,
}

/// On whose behalf a batch request runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Owner(Identity),
    Admin(Identity),
    /// A page link or a control token.
    Token(Grant),
}

impl Grant {
    /// Whether this token lets its holder do `action`.
    pub fn allows(&self, action: BatchAction) -> bool {
        match action {
            BatchAction::Read => true,
            BatchAction::Cancel | BatchAction::Retry => self.scope == Scope::Control,
            BatchAction::IssueControlToken => false,
        }
    }
}

/// Everything that decides access to batches and makes their links: the user authenticator, the
/// batch tokens (page links, control tokens), the image and reference link signer, the admins.
#[derive(Debug, Clone)]
pub struct Access {
    pub auth: Arc<dyn Authenticator>,
    pub tokens: CapabilityTokens,
    pub links: LinkSigner,
    pub admins: AllowList,
}

impl Access {
    /// Dev auth (trust `X-Assetgen-User`) with fresh random secrets and no admins: tests, and a
    /// local `serve` where links need not outlive the process.
    pub fn dev() -> Self {
        Self {
            auth: Arc::new(super::DevAuth),
            tokens: CapabilityTokens::random(),
            links: LinkSigner::random(),
            admins: AllowList::default(),
        }
    }

    /// The signed-in caller of a route that is not about one batch (submit, estimate, budget, and
    /// issuing a reference manager token).
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Identity, Problem> {
        self.auth.authenticate(headers).await
    }

    /// The caller of a reference library route (`/v1/refs…`): a signed-in user, or the holder of a
    /// reference manager token (the `/refs` page opened from the Sheet or the CLI), who acts as the
    /// user it was issued to for as long as that user is still admitted (the allow-list is asked
    /// again on every call). The token is good for these routes only: it is refused as a sign-in
    /// everywhere else, and by [`Self::authorize`] for every batch.
    pub async fn authenticate_refs(&self, headers: &HeaderMap) -> Result<Identity, Problem> {
        let Some(token) = bearer_token(headers).ok().filter(|t| CapabilityTokens::is_capability_token(t)) else {
            return self.auth.authenticate(headers).await;
        };
        let who = self.tokens.verify_refs_manager(token)?;
        if !self.auth.admits(&who.user) {
            tracing::info!(user = %who.user, "reference manager token refused: its user is no longer allowed");
            return Err(Problem::new(
                ErrorCode::Forbidden,
                format!("{} is not on this service's allow-list (ASSETGEN_ALLOWED).", who.user),
            ));
        }
        Ok(who)
    }

    /// The batch named by `raw_id`, once the caller may do `action` to it; see the module's table.
    /// `query_token` is `?access_token=` (a page link: read only, whatever the token's scope).
    pub async fn authorize(
        &self,
        store: &dyn ObjectStore,
        headers: &HeaderMap,
        query_token: Option<&str>,
        raw_id: &str,
        action: BatchAction,
    ) -> Result<(BatchId, Caller), Problem> {
        let batch = BatchId::parse(raw_id).map_err(|_| Problem::batch_not_found(raw_id))?;
        let bearer = bearer_token(headers).ok().filter(|t| CapabilityTokens::is_capability_token(t));
        // A stale page link (expired, or from before the secret changed) is no credential: the
        // request is judged as if it had none (dev auth's identity locally; under OIDC, a 401 that
        // says the link is stale).
        let mut stale = None;
        let grant = match (bearer, headers.contains_key(header::AUTHORIZATION), nonempty(query_token)) {
            (Some(token), _, _) => Some(self.tokens.verify(token, &batch)?),
            // A token in a URL may have been forwarded: it reads, and never controls.
            (None, false, Some(token)) => match self.tokens.verify(token, &batch) {
                Ok(grant) => Some(Grant { scope: Scope::Read, ..grant }),
                Err(p) if p.code == ErrorCode::Unauthenticated => {
                    stale = Some(p);
                    None
                }
                Err(p) => return Err(p),
            },
            _ => None,
        };
        if let Some(grant) = &grant {
            if grant.allows(action) {
                return Ok((batch, Caller::Token(grant.clone())));
            }
            if bearer.is_some() {
                return Err(needs_owner(action));
            }
        }
        let who = match self.auth.authenticate(headers).await {
            Ok(who) => who,
            // A page link's holder who is not signed in: say what the link does not allow.
            Err(p) if grant.is_some() && p.code == ErrorCode::Unauthenticated => return Err(needs_owner(action)),
            Err(p) if p.code == ErrorCode::Unauthenticated => return Err(stale.unwrap_or(p)),
            Err(p) => return Err(p),
        };
        let manifest = load_manifest(store, &batch).await?;
        if manifest.user == who.user {
            return Ok((batch, Caller::Owner(who)));
        }
        if !self.admins.allows(who.user.as_str()) {
            tracing::info!(%batch, user = %who.user, "batch refused: not its owner");
            return Err(Problem::batch_not_found(raw_id));
        }
        match action {
            BatchAction::Read | BatchAction::Cancel => {
                tracing::info!(%batch, admin = %who.user, owner = %manifest.user, ?action, "admin access to a batch");
                Ok((batch, Caller::Admin(who)))
            }
            BatchAction::Retry | BatchAction::IssueControlToken => Err(Problem::new(
                ErrorCode::Forbidden,
                "Only the batch's owner can retry it or hand out its control token: a retry spends the owner's budget.",
            )),
        }
    }
}

fn nonempty(token: Option<&str>) -> Option<&str> {
    token.map(str::trim).filter(|t| !t.is_empty())
}

fn needs_owner(action: BatchAction) -> Problem {
    let what = match action {
        BatchAction::Read => "read",
        BatchAction::Cancel => "cancel",
        BatchAction::Retry => "retry",
        BatchAction::IssueControlToken => "get a control token for",
    };
    Problem::new(
        ErrorCode::Forbidden,
        format!(
            "This link lets you watch the batch, not {what} it. Sign in as its owner, or open the page from \
             the Sheet or the CLI, which add a control token."
        ),
    )
}
