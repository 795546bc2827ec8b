//! A small client of the HTTP API, for `sop --server URL`.

use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::wire::{
    Batch, BatchResult, BatchResults, BeginTx, ErrorBody, ItemsPage, Mode, Op, StoreEntry, StoreList,
    StoreOptionsJson, TxCreated,
};

/// A server at `base`, optionally with a bearer token.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

/// A failed call: the HTTP status (if any) and one line of text.
#[derive(Debug)]
pub(crate) struct CallError {
    pub(crate) status: Option<StatusCode>,
    pub(crate) kind: String,
    pub(crate) message: String,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.status {
            Some(s) => write!(f, "server answered {} {}: {}", s.as_u16(), self.kind, self.message),
            None => write!(f, "{}", self.message),
        }
    }
}

impl Client {
    /// A client of the server at `base` (e.g. `http://127.0.0.1:7070`).
    pub(crate) fn new(base: &str, token: Option<String>) -> Result<Self, String> {
        let url = url::Url::parse(base).map_err(|e| format!("--server {base:?}: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("--server {base:?}: the scheme must be http or https"));
        }
        let http = reqwest::Client::builder().build().map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Self { http, base: base.trim_end_matches('/').to_owned(), token })
    }

    /// Sends a request and decodes a JSON answer (`Value::Null` when the
    /// answer has no body).
    pub(crate) async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, CallError> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| CallError {
            status: None,
            kind: "unreachable".into(),
            message: format!("cannot reach {}: {e}", self.base),
        })?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| CallError {
            status: Some(status),
            kind: "read".into(),
            message: e.to_string(),
        })?;
        if !status.is_success() {
            let (kind, message) = match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(b) => (b.error, b.message),
                Err(_) => ("http".into(), String::from_utf8_lossy(&bytes).into_owned()),
            };
            return Err(CallError { status: Some(status), kind, message });
        }
        let bytes = if bytes.is_empty() { &b"null"[..] } else { &bytes[..] };
        serde_json::from_slice(bytes).map_err(|e| CallError {
            status: Some(status),
            kind: "bad_answer".into(),
            message: format!("undecodable answer: {e}"),
        })
    }

    /// `GET /v1/stores`.
    pub(crate) async fn stores(&self) -> Result<Vec<StoreEntry>, CallError> {
        let list: StoreList = self.call::<(), _>(Method::GET, "/v1/stores", None).await?;
        Ok(list.stores)
    }

    /// `PUT /v1/stores/{name}`.
    pub(crate) async fn create_store(&self, name: &str, opts: &StoreOptionsJson) -> Result<(), CallError> {
        self.call::<_, Value>(Method::PUT, &format!("/v1/stores/{}", enc(name)), Some(opts)).await.map(drop)
    }

    /// `DELETE /v1/stores/{name}`.
    pub(crate) async fn drop_store(&self, name: &str) -> Result<(), CallError> {
        self.call::<(), Value>(Method::DELETE, &format!("/v1/stores/{}", enc(name)), None).await.map(drop)
    }

    /// `POST /v1/batch`.
    pub(crate) async fn batch(&self, ops: Vec<Op>) -> Result<Vec<Option<BatchResult>>, CallError> {
        let r: BatchResults = self.call(Method::POST, "/v1/batch", Some(&Batch { ops })).await?;
        Ok(r.results)
    }

    /// One page of a range read, in a read transaction of its own.
    pub(crate) async fn page(
        &self,
        store: &str,
        from: Option<&str>,
        to: Option<&str>,
        limit: usize,
        reverse: bool,
    ) -> Result<ItemsPage, CallError> {
        let begin = BeginTx { mode: Mode::Read, timeout_ms: None };
        let tx: TxCreated = self.call(Method::POST, "/v1/tx", Some(&begin)).await?;
        let mut q = format!("limit={limit}&reverse={reverse}");
        if let Some(f) = from {
            q.push_str(&format!("&from={}", enc(f)));
        }
        if let Some(t) = to {
            q.push_str(&format!("&to={}", enc(t)));
        }
        let path = format!("/v1/tx/{}/stores/{}/items?{q}", tx.tx, enc(store));
        let page = self.call::<(), ItemsPage>(Method::GET, &path, None).await;
        let end = if page.is_ok() { "commit" } else { "rollback" };
        let ended = self.call::<(), Value>(Method::POST, &format!("/v1/tx/{}/{end}", tx.tx), None).await;
        let page = page?;
        ended?;
        Ok(page)
    }
}

/// Percent-encodes a path segment or query value.
pub(crate) fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>().replace('+', "%20")
}
