//! The tape: what a recorded call saw of the world, enough to answer the same call again without
//! the world. A transcript ([`super::call`]) says what a call did; the tape keeps the values:
//! each state key as the call first found it (before its own writes), the keys its listings
//! held, and each outbound request with its response. [`Replayed`] answers a replayed call from a
//! tape: its state reads from the snapshot (its own writes, in the call's overlay, seen by its
//! later reads), its requests from the recorded responses, matched by method, URL and body, and
//! nothing leaves the process.
//!
//! Every string and value passes through the backend's redaction ([`TapeRecord::redacted`])
//! before it leaves the call, so a recording on disk holds no secret the config named.

use std::collections::{BTreeMap, BTreeSet};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use wasmtime_wasi_http::{Error as HttpError, WasiBody};

use crate::state::{MAX_PAGE, Ownership, StateError, StateStore};

/// The most bytes of one request or response body a tape keeps; a longer one is kept cut and
/// marked incomplete (a replay cannot answer with it).
pub const MAX_TAPED_BODY: usize = 256 << 10;
/// The most bytes of values and bodies one call's tape keeps; past it, the tape is marked cut.
pub const MAX_TAPE_BYTES: usize = 4 << 20;
/// Headers whose values are credentials by name: kept as `[redacted]` whatever they hold.
const CREDENTIAL_HEADERS: [&str; 7] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-amz-security-token",
    "x-api-key",
    "x-auth-token",
];

/// A value as a recording holds it: text when it is UTF-8, else base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Value {
    /// UTF-8 text.
    Text(String),
    /// Any other bytes.
    Base64(String),
}

impl Value {
    /// `bytes` as a recording holds them.
    pub fn of(bytes: &[u8]) -> Value {
        match std::str::from_utf8(bytes) {
            Ok(text) => Value::Text(text.to_string()),
            Err(_) => Value::Base64(STANDARD.encode(bytes)),
        }
    }

    /// The bytes (an undecodable base64 value, written by hand, reads as its text).
    pub fn bytes(&self) -> Vec<u8> {
        match self {
            Value::Text(text) => text.as_bytes().to_vec(),
            Value::Base64(encoded) => STANDARD
                .decode(encoded)
                .unwrap_or_else(|_| encoded.as_bytes().to_vec()),
        }
    }

    /// The text, for a diff: the value as JSON when it is JSON, else a string.
    pub fn json(&self) -> serde_json::Value {
        match self {
            Value::Text(text) => serde_json::from_str(text)
                .unwrap_or_else(|_| serde_json::Value::String(text.clone())),
            Value::Base64(encoded) => serde_json::Value::String(format!("base64:{encoded}")),
        }
    }
}

/// A state key as the call found it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Found {
    /// Read, with this value.
    Value(Value),
    /// Read, and not set.
    Absent,
    /// Listed (it existed) but never read.
    Listed,
}

/// A body as taped: its start and whether that is all of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TapedBody {
    /// The body (up to [`MAX_TAPED_BODY`]).
    pub value: Value,
    /// Its size in bytes, as far as it was seen.
    pub size: usize,
    /// Whether `value` is the whole body.
    pub complete: bool,
}

/// One outbound request and what came back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exchange {
    /// The method.
    pub method: String,
    /// The URL.
    pub url: String,
    /// The request's body, as far as it was sent.
    pub request_body: TapedBody,
    /// The response status, if a response came.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub status: Option<u16>,
    /// The response headers (credentials by name redacted).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub response_headers: Vec<(String, String)>,
    /// The response body, as far as the plugin read it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub response_body: Option<TapedBody>,
    /// Why no response came (refused, timed out).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
}

/// What a recorded call saw: the state before its writes and its requests with their answers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TapeRecord {
    /// Each key the call read or listed, as it first found it.
    pub state: BTreeMap<String, Found>,
    /// Its outbound requests, in order.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub http: Vec<Exchange>,
    /// More than [`MAX_TAPE_BYTES`] were seen: values or bodies are missing.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub cut: bool,
}

impl TapeRecord {
    /// The same record with `redact` applied to every string and value; credentials in
    /// headers are redacted by name.
    pub fn redacted(mut self, redact: &dyn Fn(&str) -> String) -> TapeRecord {
        let value = |value: &mut Value| {
            if let Value::Text(text) = value {
                *text = redact(text);
            } else {
                // Binary: redact what its bytes hold as text, keep it binary.
                let bytes = value.bytes();
                let text = String::from_utf8_lossy(&bytes);
                let cut = redact(&text);
                if cut != text {
                    *value = Value::Base64(STANDARD.encode(cut.as_bytes()));
                }
            }
        };
        self.state = std::mem::take(&mut self.state)
            .into_iter()
            .map(|(key, mut found)| {
                if let Found::Value(v) = &mut found {
                    value(v);
                }
                (redact(&key), found)
            })
            .collect();
        for exchange in &mut self.http {
            exchange.url = redact(&exchange.url);
            value(&mut exchange.request_body.value);
            if let Some(body) = &mut exchange.response_body {
                value(&mut body.value);
            }
            for (name, text) in &mut exchange.response_headers {
                *text = if CREDENTIAL_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                    "[redacted]".to_string()
                } else {
                    redact(text)
                };
            }
            if let Some(error) = &mut exchange.error {
                *error = redact(error);
            }
        }
        self
    }
}

/// A body's bytes as they pass, up to a bound.
#[derive(Debug, Default)]
pub struct Captured {
    bytes: Vec<u8>,
    size: usize,
    complete: bool,
}

impl Captured {
    /// As a recording holds it.
    fn taped(&self) -> TapedBody {
        TapedBody {
            value: Value::of(&self.bytes),
            size: self.size,
            complete: self.complete && self.size == self.bytes.len(),
        }
    }
}

/// A body that copies what passes through it into a [`Captured`], up to [`MAX_TAPED_BODY`]:
/// the plugin's request goes out, and its response comes in, exactly as without a tape.
struct Tee {
    inner: WasiBody,
    sink: Arc<Mutex<Captured>>,
}

impl http_body::Body for Tee {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, HttpError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        let mut sink = this.sink.lock().unwrap_or_else(|e| e.into_inner());
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    sink.size += data.len();
                    let room = MAX_TAPED_BODY.saturating_sub(sink.bytes.len());
                    sink.bytes.extend_from_slice(&data[..data.len().min(room)]);
                }
            }
            Poll::Ready(None) => sink.complete = true,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// `body`, copied into the returned [`Captured`] as it passes.
pub fn tee(body: WasiBody) -> (WasiBody, Arc<Mutex<Captured>>) {
    use http_body_util::BodyExt;
    let sink = Arc::new(Mutex::new(Captured::default()));
    let tee = Tee {
        inner: body,
        sink: sink.clone(),
    };
    (tee.boxed_unsync(), sink)
}

/// One request on a tape while its call runs.
#[derive(Debug)]
struct Running {
    method: String,
    url: String,
    request: Arc<Mutex<Captured>>,
    status: Option<u16>,
    headers: Vec<(String, String)>,
    response: Option<Arc<Mutex<Captured>>>,
    error: Option<String>,
}

/// A recorded call's tape while it runs ([`super::call::CallContext`] holds it).
#[derive(Debug, Default)]
pub struct Tape {
    state: BTreeMap<String, Found>,
    written: BTreeSet<String>,
    http: Vec<Running>,
    bytes: usize,
    cut: bool,
}

impl Tape {
    /// A read of `key` that found `value` in the store: kept if it is the call's first look at
    /// a key it has not written.
    pub fn read(&mut self, key: &str, value: Option<&[u8]>) {
        if self.written.contains(key) || matches!(self.state.get(key), Some(Found::Value(_))) {
            return;
        }
        if matches!(self.state.get(key), Some(Found::Absent)) {
            return;
        }
        let found = match value {
            None => Found::Absent,
            Some(value) => {
                if self.bytes + key.len() + value.len() > MAX_TAPE_BYTES {
                    self.cut = true;
                    return;
                }
                self.bytes += key.len() + value.len();
                Found::Value(Value::of(value))
            }
        };
        self.state.insert(key.to_string(), found);
    }

    /// Keys a listing found in the store.
    pub fn listed(&mut self, keys: &[String]) {
        for key in keys {
            if self.written.contains(key) || self.state.contains_key(key) {
                continue;
            }
            if self.bytes + key.len() > MAX_TAPE_BYTES {
                self.cut = true;
                return;
            }
            self.bytes += key.len();
            self.state.insert(key.clone(), Found::Listed);
        }
    }

    /// A write of `key` by the call: its later reads see its own value, not the world's.
    pub fn wrote(&mut self, key: &str) {
        self.written.insert(key.to_string());
    }

    /// An outbound request whose body is being copied into `request`; its index.
    pub fn request(&mut self, method: &str, url: &str, request: Arc<Mutex<Captured>>) -> usize {
        self.http.push(Running {
            method: method.to_string(),
            url: url.to_string(),
            request,
            status: None,
            headers: Vec::new(),
            response: None,
            error: None,
        });
        self.http.len() - 1
    }

    /// The response to request `index`: its head, and its body being copied into `body`.
    pub fn response(
        &mut self,
        index: usize,
        status: u16,
        headers: &http::HeaderMap,
        body: Arc<Mutex<Captured>>,
    ) {
        if let Some(running) = self.http.get_mut(index) {
            running.status = Some(status);
            running.headers = headers
                .iter()
                .map(|(name, value)| {
                    (
                        name.as_str().to_string(),
                        String::from_utf8_lossy(value.as_bytes()).into_owned(),
                    )
                })
                .collect();
            running.response = Some(body);
        }
    }

    /// Request `index` failed with `error`.
    pub fn failed(&mut self, index: usize, error: String) {
        if let Some(running) = self.http.get_mut(index) {
            running.error = Some(error);
        }
    }

    /// What the call saw, once it is over (not yet redacted).
    pub fn finish(&mut self) -> TapeRecord {
        let mut bytes = self.bytes;
        let mut cut = self.cut;
        let mut body = |captured: &Arc<Mutex<Captured>>| {
            let taped = captured.lock().unwrap_or_else(|e| e.into_inner()).taped();
            bytes += taped.size.min(MAX_TAPED_BODY);
            if bytes > MAX_TAPE_BYTES {
                cut = true;
                TapedBody {
                    value: Value::Text(String::new()),
                    size: taped.size,
                    complete: false,
                }
            } else {
                taped
            }
        };
        let http = self
            .http
            .iter()
            .map(|running| Exchange {
                method: running.method.clone(),
                url: running.url.clone(),
                request_body: body(&running.request),
                status: running.status,
                response_headers: running.headers.clone(),
                response_body: running.response.as_ref().map(&mut body),
                error: running.error.clone(),
            })
            .collect();
        TapeRecord {
            state: self.state.clone(),
            http,
            cut,
        }
    }
}

/// Something a replayed call did that its recording cannot answer for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Unrecorded {
    /// It read a key the recorded call never looked at (answered as not set).
    Read {
        /// The key.
        key: String,
    },
    /// It sent a request the recording does not have (answered as denied, or, when one of the
    /// same method and URL was recorded, with that one's response).
    Request {
        /// The method.
        method: String,
        /// The URL.
        url: String,
        /// The body it sent.
        body: Value,
        /// The recorded request of the same method and URL whose response answered it.
        #[serde(skip_serializing_if = "Option::is_none", default)]
        nearest: Option<usize>,
    },
}

/// A request a replay made: method, URL, body, and the recorded exchange that answered it.
pub type ReplayRequest = (String, String, Value, Option<usize>);

/// A replayed call's world: the tape of its recording, and what it asked for that the tape
/// lacks.
#[derive(Debug)]
pub struct Replayed {
    store: Arc<TapeStore>,
    http: Vec<Exchange>,
    used: Mutex<Vec<bool>>,
    unrecorded: Mutex<Vec<Unrecorded>>,
    /// Each request of the replay, in order: the recorded one that answered it, if any.
    requests: Mutex<Vec<ReplayRequest>>,
}

impl Replayed {
    /// The world as `tape` saw it.
    pub fn new(tape: &TapeRecord) -> Arc<Replayed> {
        let store = TapeStore {
            state: tape.state.clone(),
            unread: Mutex::default(),
        };
        Arc::new(Replayed {
            store: Arc::new(store),
            used: Mutex::new(vec![false; tape.http.len()]),
            http: tape.http.clone(),
            unrecorded: Mutex::default(),
            requests: Mutex::default(),
        })
    }

    /// The state store the replayed call reads.
    pub fn store(&self) -> Arc<dyn StateStore> {
        self.store.clone()
    }

    /// The answer to a request: the first unused recorded exchange with the same method, URL
    /// and body; else, reported, the first unused one with the same method and URL; else
    /// denied, reported.
    pub fn answer(
        &self,
        method: &str,
        url: &str,
        body: &[u8],
    ) -> Result<http::Response<WasiBody>, HttpError> {
        use http_body_util::BodyExt;
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        let same_target = |e: &Exchange| e.method == method && e.url == url;
        let exact = (0..self.http.len()).find(|&i| {
            !used[i]
                && same_target(&self.http[i])
                && self.http[i].request_body.value.bytes() == body
        });
        let chosen = exact
            .or_else(|| (0..self.http.len()).find(|&i| !used[i] && same_target(&self.http[i])));
        if exact.is_none() {
            self.unrecorded
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(Unrecorded::Request {
                    method: method.to_string(),
                    url: url.to_string(),
                    body: Value::of(body),
                    nearest: chosen,
                });
        }
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((method.to_string(), url.to_string(), Value::of(body), chosen));
        let Some(index) = chosen else {
            return Err(HttpError::HttpRequestDenied);
        };
        used[index] = true;
        let exchange = &self.http[index];
        let (Some(status), Some(body)) = (exchange.status, &exchange.response_body) else {
            return Err(HttpError::ConnectionRefused);
        };
        let mut response = http::Response::builder().status(status);
        for (name, value) in &exchange.response_headers {
            // The body is whole here: framing headers of the original do not apply.
            if !matches!(
                name.to_ascii_lowercase().as_str(),
                "content-length" | "transfer-encoding" | "connection"
            ) {
                response = response.header(name, value);
            }
        }
        let body = http_body_util::Full::new(Bytes::from(body.value.bytes()))
            .map_err(|never| match never {})
            .boxed_unsync();
        response
            .body(body)
            .map_err(|e| HttpError::InternalError(Some(e.to_string())))
    }

    /// What the replayed call did that the tape cannot answer for: reads, then requests.
    pub fn unrecorded(&self) -> Vec<Unrecorded> {
        let mut all: Vec<Unrecorded> = self
            .store
            .unread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|key| Unrecorded::Read { key: key.clone() })
            .collect();
        all.extend(
            self.unrecorded
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .cloned(),
        );
        all
    }

    /// The replay's requests in order (method, URL, body, the recorded one that answered).
    pub fn requests(&self) -> Vec<ReplayRequest> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The recorded exchanges no request of the replay used.
    pub fn unused(&self) -> Vec<usize> {
        let used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        (0..self.http.len()).filter(|&i| !used[i]).collect()
    }
}

/// The state as a tape saw it, read-only: a replayed call writes to its overlay, never here.
#[derive(Debug)]
struct TapeStore {
    state: BTreeMap<String, Found>,
    /// Keys read that the tape lacks (or only listed), in order, once each.
    unread: Mutex<Vec<String>>,
}

impl TapeStore {
    fn unrecorded(&self, key: &str) {
        let mut unread = self.unread.lock().unwrap_or_else(|e| e.into_inner());
        if !unread.iter().any(|k| k == key) {
            unread.push(key.to_string());
        }
    }
}

fn read_only() -> StateError {
    StateError::Storage("a replayed call writes to its overlay only".into())
}

#[async_trait]
impl StateStore for TapeStore {
    async fn get(&self, _namespace: &str, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        match self.state.get(key) {
            Some(Found::Value(value)) => Ok(Some(value.bytes())),
            Some(Found::Absent) => Ok(None),
            Some(Found::Listed) | None => {
                self.unrecorded(key);
                Ok(None)
            }
        }
    }

    async fn set(&self, _: &str, _: &str, _: &[u8]) -> Result<(), StateError> {
        Err(read_only())
    }

    async fn delete(&self, _: &str, _: &str) -> Result<(), StateError> {
        Err(read_only())
    }

    async fn compare_and_swap(
        &self,
        _: &str,
        _: &str,
        _: Option<&[u8]>,
        _: Option<&[u8]>,
    ) -> Result<bool, StateError> {
        Err(read_only())
    }

    async fn list_keys(
        &self,
        _namespace: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StateError> {
        let start = after.unwrap_or(prefix);
        Ok(self
            .state
            .range(start.to_string()..)
            .filter(|(key, _)| after.is_none_or(|after| key.as_str() > after))
            .take_while(|(key, _)| key.starts_with(prefix))
            .filter(|(_, found)| !matches!(found, Found::Absent))
            .map(|(key, _)| key.clone())
            .take(limit.min(MAX_PAGE))
            .collect())
    }

    async fn namespaces(&self, _: Option<&str>, _: usize) -> Result<Vec<String>, StateError> {
        Ok(Vec::new())
    }

    async fn owner(&self, _: &str, _: &str) -> Result<Option<String>, StateError> {
        Ok(None)
    }

    async fn record_owners(&self, _: &[Ownership]) -> Result<(), StateError> {
        Err(read_only())
    }

    async fn forget_owner(&self, _: &str, _: &str) -> Result<(), StateError> {
        Err(read_only())
    }

    async fn owners(
        &self,
        _: Option<(&str, &str)>,
        _: usize,
    ) -> Result<Vec<Ownership>, StateError> {
        Ok(Vec::new())
    }

    async fn check(&self) -> Result<(), StateError> {
        Ok(())
    }

    fn describe(&self) -> String {
        "a recording's state".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_tape_keeps_the_state_before_the_calls_own_writes_and_a_replay_answers_from_it() {
        let mut tape = Tape::default();
        tape.read("a", Some(b"1"));
        tape.read("b", None);
        tape.wrote("c");
        tape.read("c", Some(b"mine"));
        tape.listed(&["a".into(), "d".into(), "c".into()]);
        tape.read("a", Some(b"changed"));
        let record = tape.finish();
        assert_eq!(record.state["a"], Found::Value(Value::Text("1".into())));
        assert_eq!(record.state["b"], Found::Absent);
        assert_eq!(record.state["d"], Found::Listed);
        assert!(!record.state.contains_key("c"), "the call's own write");

        let replayed = Replayed::new(&record);
        let store = replayed.store();
        assert_eq!(store.get("ns", "a").await.unwrap(), Some(b"1".to_vec()));
        assert_eq!(store.get("ns", "b").await.unwrap(), None);
        assert_eq!(
            store.list_keys("ns", "", None, 10).await.unwrap(),
            ["a", "d"]
        );
        assert_eq!(
            store.list_keys("ns", "", Some("a"), 10).await.unwrap(),
            ["d"]
        );
        assert!(store.set("ns", "a", b"x").await.is_err());
        assert_eq!(store.get("ns", "zz").await.unwrap(), None);
        assert_eq!(
            replayed.unrecorded(),
            [Unrecorded::Read { key: "zz".into() }]
        );
    }

    #[test]
    fn requests_are_answered_by_method_url_and_body_and_the_rest_reported() {
        let exchange = |body: &str, status: u16| Exchange {
            method: "POST".into(),
            url: "http://x/run".into(),
            request_body: TapedBody {
                value: Value::of(body.as_bytes()),
                size: body.len(),
                complete: true,
            },
            status: Some(status),
            response_headers: vec![("content-type".into(), "text/plain".into())],
            response_body: Some(TapedBody {
                value: Value::of(b"ok"),
                size: 2,
                complete: true,
            }),
            error: None,
        };
        let record = TapeRecord {
            state: BTreeMap::new(),
            http: vec![exchange("a=1", 200), exchange("a=2", 201)],
            cut: false,
        };
        let replayed = Replayed::new(&record);
        let second = replayed.answer("POST", "http://x/run", b"a=2").unwrap();
        assert_eq!(second.status(), 201);
        // Not recorded: answered by the unused one of the same target, and reported.
        let other = replayed.answer("POST", "http://x/run", b"a=3").unwrap();
        assert_eq!(other.status(), 200);
        assert!(replayed.answer("GET", "http://y/", b"").is_err());
        assert_eq!(replayed.unrecorded().len(), 2);
        assert!(replayed.unused().is_empty());
        assert_eq!(replayed.requests()[0].3, Some(1));
    }

    #[test]
    fn redaction_reaches_keys_values_bodies_and_credential_headers() {
        let mut state = BTreeMap::new();
        state.insert(
            "k-hunter2".to_string(),
            Found::Value(Value::Text("pw=hunter2".into())),
        );
        let record = TapeRecord {
            state,
            http: vec![Exchange {
                method: "GET".into(),
                url: "http://x/?key=hunter2".into(),
                request_body: TapedBody {
                    value: Value::Base64(STANDARD.encode(b"\xffhunter2")),
                    size: 8,
                    complete: true,
                },
                status: Some(200),
                response_headers: vec![("Set-Cookie".into(), "s=abc".into())],
                response_body: None,
                error: None,
            }],
            cut: false,
        };
        let redacted = record.redacted(&|s: &str| s.replace("hunter2", "[redacted]"));
        let text = serde_json::to_string(&redacted).unwrap();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(!text.contains(&STANDARD.encode(b"\xffhunter2")), "{text}");
        assert!(!text.contains("s=abc"), "{text}");
    }
}
