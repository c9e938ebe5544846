//! A test's client of one assetgen HTTP API (`assetgen serve`, or the submit function), as one
//! caller: the calls the end-to-end tests all make (submit a batch, read it, wait for it to end,
//! read the budget), each failing the test with what the server said when it goes wrong.

use reqwest::RequestBuilder;
use serde_json::Value;
use std::time::{Duration, Instant};

/// Who the requests are from.
#[derive(Debug, Clone)]
enum Caller {
    /// No credentials: with dev auth (`assetgen serve`'s default), the default user.
    Default,
    /// Dev auth's `x-assetgen-user` header.
    DevUser(String),
    /// `Authorization: Bearer` (an ID token with OIDC on, or a page's token).
    Token(String),
}

/// See the module's documentation.
#[derive(Debug, Clone)]
pub struct ApiClient {
    pub client: reqwest::Client,
    pub base: String,
    caller: Caller,
}

impl ApiClient {
    /// Calls `base` (no trailing `/`) as the default user.
    pub fn new(base: &str) -> Self {
        Self { client: reqwest::Client::new(), base: base.to_owned(), caller: Caller::Default }
    }

    /// Calls as `user`, named by dev auth's header.
    pub fn as_dev_user(self, user: &str) -> Self {
        Self { caller: Caller::DevUser(user.to_owned()), ..self }
    }

    /// Calls with `token` as the bearer.
    pub fn with_token(self, token: &str) -> Self {
        Self { caller: Caller::Token(token.to_owned()), ..self }
    }

    fn signed(&self, request: RequestBuilder) -> RequestBuilder {
        match &self.caller {
            Caller::Default => request,
            Caller::DevUser(user) => request.header("x-assetgen-user", user),
            Caller::Token(token) => request.bearer_auth(token),
        }
    }

    /// `GET {base}{path}` as this caller, to send.
    pub fn get(&self, path: &str) -> RequestBuilder {
        self.signed(self.client.get(format!("{}{path}", self.base)))
    }

    /// `POST {base}{path}` as this caller, to send.
    pub fn post(&self, path: &str) -> RequestBuilder {
        self.signed(self.client.post(format!("{}{path}", self.base)))
    }

    /// `GET {base}{path}`, which must answer 200 with JSON.
    pub async fn get_json(&self, path: &str) -> Value {
        let answer = self.get(path).send().await.unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = answer.status();
        let body = answer.text().await.unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {body}"))
    }

    /// Submits `request` (the body of `POST /v1/batches`), which must be accepted (202 with a
    /// batch id); returns the batch id and the whole answer.
    pub async fn submit(&self, request: &Value) -> (String, Value) {
        Self::accepted(self.post("/v1/batches").json(request)).await
    }

    /// Sends a submit the test built itself (with headers of its own), which must be accepted as
    /// in [`Self::submit`].
    pub async fn accepted(submit: RequestBuilder) -> (String, Value) {
        let answer = submit.send().await.expect("submit");
        let status = answer.status();
        let accepted: Value = answer.json().await.expect("the submit answer is JSON");
        assert_eq!(status, 202, "submit: {accepted}");
        let id = accepted["batch_id"].as_str().unwrap_or_else(|| panic!("accepted without an id: {accepted}"));
        (id.to_owned(), accepted)
    }

    /// The batch's view (`GET /v1/batches/{id}`).
    pub async fn batch(&self, id: &str) -> Value {
        self.get_json(&format!("/v1/batches/{id}")).await
    }

    /// Reads the batch every 100 ms until `done` holds for its view, and returns that view; fails
    /// the test, naming `what` and the last view, if it does not within `within`.
    pub async fn until(&self, id: &str, within: Duration, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let view = self.batch(id).await;
            if done(&view) {
                return view;
            }
            assert!(Instant::now() < deadline, "{what} did not happen within {within:?}: {view}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// [`Self::until`] the batch has ended (any status but queued and running).
    pub async fn ended(&self, id: &str, within: Duration) -> Value {
        self.until(id, within, "the batch ending", |view| {
            view["status"].as_str().is_some_and(|s| s != "queued" && s != "running")
        })
        .await
    }

    /// The caller's budget today (`GET /v1/budget`).
    pub async fn budget(&self) -> Value {
        self.get_json("/v1/budget").await
    }

    /// The budget once it holds nothing, or as it stands after `within`: a batch's hold is settled
    /// a moment after its last row ends, so a test that saw the rows end waits for it (bounded).
    pub async fn settled_budget(&self, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let budget = self.budget().await;
            if budget["reserved_usd"].as_f64() == Some(0.0) || Instant::now() > deadline {
                return budget;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
