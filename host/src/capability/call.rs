//! The per-call context: the mode a call runs in, the state overlay of the modes that keep the
//! store untouched, and the ordered transcript of the plugin's host calls.
//!
//! Everything a plugin does to the world passes through a host call, so one context, created by
//! the runtime for each call and consulted by each capability in one place (the version-free
//! cores of [`super::state`], the outbound hook of [`super::http`], [`super::logging`]), decides
//! whether an effect reaches the world and writes down what happened. A live call that nobody
//! asked to record costs one allocation and a branch per host call.
//!
//! | mode   | state                              | outbound HTTP                          |
//! |--------|------------------------------------|----------------------------------------|
//! | live   | the store                          | sent                                   |
//! | shadow | an overlay on the store, discarded | reads sent; writes not sent            |
//! | plan   | an overlay on the store, reported  | reads sent and recorded; writes withheld and reported |
//! | replay | an overlay on a recording's state  | none sent: answered from the recording |
//!
//! A live call of a backend that records its traffic also keeps a [`Tape`]: the values it
//! read and the responses it got, which a replay answers from ([`Replayed`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::tape::{Replayed, Tape, TapeRecord};
use crate::state::StateStore;

/// How a call may touch the world.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// The public API: the store and every granted request.
    Live,
    /// Beside a live call (a candidate's discovery): reads only, everything else discarded.
    Shadow,
    /// `/admin/plan/*`: reads only; the first withheld effect is where the plugin stopped.
    Plan,
    /// A recorded call run again (`replay`): state from the recording, requests answered from
    /// it; nothing reaches the store or the network.
    Replay,
}

impl Mode {
    /// Whether state writes go to an overlay instead of the store, and non-read requests are
    /// withheld.
    pub fn dry(self) -> bool {
        self != Mode::Live
    }
}

/// The most transcript entries a call keeps; later ones are counted, not kept.
pub const MAX_EVENTS: usize = 4096;
/// The most distinct keys (and listed prefixes) whose versions a call remembers for a plan.
pub const MAX_READS: usize = 10_000;
/// The longest value shown in a transcript; longer (or binary) values are given by size.
pub const MAX_SHOWN_VALUE: usize = 256;
/// The most bytes of a withheld request's body a transcript shows.
pub const MAX_SHOWN_BODY: usize = 1024;

/// A stored value's version: a digest of its content (`absent` for no value). The store keeps
/// no version numbers; the digest changes whenever the content does, which is what a plan's
/// check needs.
pub fn version(value: Option<&[u8]>) -> String {
    use sha2::{Digest, Sha256};
    match value {
        None => "absent".to_string(),
        Some(value) => {
            let digest = Sha256::digest(value);
            let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
            format!("sha256:{hex}")
        }
    }
}

/// A value as a transcript shows it: its text when it is short UTF-8.
fn shown(value: &[u8]) -> Option<String> {
    (value.len() <= MAX_SHOWN_VALUE)
        .then(|| std::str::from_utf8(value).ok().map(str::to_string))
        .flatten()
}

/// A state write's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteOp {
    /// `set`.
    Set,
    /// `delete`.
    Delete,
    /// `compare-and-swap`.
    CompareAndSwap,
}

impl WriteOp {
    /// Its name in the contract.
    pub fn name(self) -> &'static str {
        match self {
            WriteOp::Set => "set",
            WriteOp::Delete => "delete",
            WriteOp::CompareAndSwap => "compare-and-swap",
        }
    }
}

/// One host call of the plugin, in order. Strings are the plugin's own: redact them before they
/// leave the gateway ([`Transcript::redacted`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// A state read (`get`).
    StateRead {
        /// The key.
        key: String,
        /// The version it found.
        version: String,
        /// Whether the call's own earlier write answered it (dry modes).
        overlay: bool,
    },
    /// A listing of keys.
    StateList {
        /// The prefix.
        prefix: String,
        /// How many keys it answered.
        keys: usize,
    },
    /// A state write.
    StateWrite {
        /// Which operation.
        operation: WriteOp,
        /// The key.
        key: String,
        /// The version before (unknown when a live write did not read it).
        #[serde(skip_serializing_if = "Option::is_none")]
        old_version: Option<String>,
        /// The version after (`absent` for a delete).
        new_version: String,
        /// The new value's size in bytes.
        #[serde(skip_serializing_if = "Option::is_none")]
        size: Option<usize>,
        /// The new value, when it is short text.
        #[serde(skip_serializing_if = "Option::is_none")]
        value: Option<String>,
        /// Whether it took effect (a compare-and-swap that found another value did not); in a
        /// dry mode, in the overlay only.
        written: bool,
    },
    /// An outbound HTTP request.
    Http {
        /// The method.
        method: String,
        /// The URL, without its query's secrets (redacted on the way out).
        url: String,
        /// Whether it counts as a read (GET, HEAD, OPTIONS, or the grant's `reads`).
        read: bool,
        /// Whether it left the gateway.
        sent: bool,
        /// The response status, if one came.
        #[serde(skip_serializing_if = "Option::is_none")]
        status: Option<u16>,
        /// Why it failed or was not sent.
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// The start of the body of a request that was not sent.
        #[serde(skip_serializing_if = "Option::is_none")]
        body: Option<String>,
        /// The body's size, when it was looked at.
        #[serde(skip_serializing_if = "Option::is_none")]
        body_size: Option<usize>,
    },
    /// A log message (after the logging capability's own bounds and redaction).
    Log {
        /// The level.
        level: String,
        /// The message.
        message: String,
    },
}

impl Event {
    /// Whether this is an effect on the world (a write, or a request that is not a read), and
    /// its identity for comparing two calls: the same effect on the same thing.
    pub fn effect(&self) -> Option<String> {
        match self {
            Event::StateWrite {
                operation,
                key,
                new_version,
                written: true,
                ..
            } => Some(format!("{} {key} -> {new_version}", operation.name())),
            Event::Http {
                method,
                url,
                read: false,
                ..
            } => Some(format!("{method} {url}")),
            _ => None,
        }
    }
}

/// What a call did, in order, and what it read from the store.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Transcript {
    /// Its host calls, up to [`MAX_EVENTS`].
    pub events: Vec<Event>,
    /// Host calls past [`MAX_EVENTS`], not kept.
    pub dropped: u64,
    /// The index in `events` of the first effect that was withheld, if any.
    pub stopped_at: Option<usize>,
    /// Every key read from the store, with the version first found.
    pub reads: BTreeMap<String, String>,
    /// Every prefix listed from the store, with a digest of the keys it held.
    pub lists: BTreeMap<String, String>,
    /// More than [`MAX_READS`] keys or prefixes were read: the reads are incomplete.
    pub reads_overflow: bool,
}

impl Transcript {
    /// The same transcript with `redact` applied to every string the plugin chose.
    pub fn redacted(mut self, redact: impl Fn(&str) -> String) -> Transcript {
        let opt = |s: &mut Option<String>| {
            if let Some(text) = s {
                *text = redact(text);
            }
        };
        for event in &mut self.events {
            match event {
                Event::StateRead { key, .. } => *key = redact(key),
                Event::StateList { prefix, .. } => *prefix = redact(prefix),
                Event::StateWrite { key, value, .. } => {
                    *key = redact(key);
                    opt(value);
                }
                Event::Http {
                    url, error, body, ..
                } => {
                    *url = redact(url);
                    opt(error);
                    opt(body);
                }
                Event::Log { message, .. } => *message = redact(message),
            }
        }
        self.reads = std::mem::take(&mut self.reads)
            .into_iter()
            .map(|(k, v)| (redact(&k), v))
            .collect();
        self.lists = std::mem::take(&mut self.lists)
            .into_iter()
            .map(|(k, v)| (redact(&k), v))
            .collect();
        self
    }

    /// The effects, in order, up to (and with) the first withheld one.
    pub fn effects(&self) -> Vec<String> {
        let end = self.stopped_at.map_or(self.events.len(), |i| i + 1);
        self.events[..end.min(self.events.len())]
            .iter()
            .filter_map(Event::effect)
            .collect()
    }
}

/// One call's context: its mode, its overlay and its transcript. Shared by the call's
/// capabilities (they live in one store and run one at a time, so the lock is never contended,
/// and never held across an await).
#[derive(Debug)]
pub struct CallContext {
    mode: Mode,
    record: bool,
    /// Replay: the recording that answers the call.
    replayed: Option<Arc<Replayed>>,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Dry modes: what the call wrote (`None`: deleted), which it reads back.
    overlay: BTreeMap<String, Option<Vec<u8>>>,
    transcript: Transcript,
    /// A recorded live call: the values it saw.
    tape: Option<Tape>,
}

impl CallContext {
    /// A live call that records nothing: the public API's.
    pub fn live() -> Arc<CallContext> {
        CallContext::new(Mode::Live, false)
    }

    /// A call in `mode`; dry modes always record, a live one when `record` says.
    pub fn new(mode: Mode, record: bool) -> Arc<CallContext> {
        Arc::new(CallContext {
            mode,
            record: record || mode.dry(),
            replayed: None,
            inner: Mutex::default(),
        })
    }

    /// A live call whose transcript and [`Tape`] are kept, for a recording.
    pub fn taped() -> Arc<CallContext> {
        let call = CallContext::new(Mode::Live, true);
        call.inner().tape = Some(Tape::default());
        call
    }

    /// A replay of a call recorded with `tape`.
    pub fn replay(tape: &TapeRecord) -> Arc<CallContext> {
        Arc::new(CallContext {
            mode: Mode::Replay,
            record: true,
            replayed: Some(Replayed::new(tape)),
            inner: Mutex::default(),
        })
    }

    /// Replay: the recording's world.
    pub fn replayed(&self) -> Option<&Arc<Replayed>> {
        self.replayed.as_ref()
    }

    /// Replay: the store the call reads instead of the gateway's.
    pub fn replay_store(&self) -> Option<Arc<dyn StateStore>> {
        self.replayed.as_ref().map(|r| r.store())
    }

    /// Whether it keeps a tape.
    pub fn taping(&self) -> bool {
        self.record && self.inner().tape.is_some()
    }

    /// Work on the tape, if the call keeps one.
    pub fn tape<R>(&self, f: impl FnOnce(&mut Tape) -> R) -> Option<R> {
        if !self.record {
            return None;
        }
        self.inner().tape.as_mut().map(f)
    }

    /// Its mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Whether it keeps a transcript.
    pub fn records(&self) -> bool {
        self.record
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Add `event` to the transcript (when recording); its index, if kept.
    pub fn push(&self, event: Event) -> Option<usize> {
        if !self.record {
            return None;
        }
        let mut inner = self.inner();
        let transcript = &mut inner.transcript;
        if transcript.events.len() >= MAX_EVENTS {
            transcript.dropped += 1;
            return None;
        }
        transcript.events.push(event);
        Some(transcript.events.len() - 1)
    }

    /// Change the kept event at `index` (an HTTP request's outcome, once known).
    pub fn update(&self, index: Option<usize>, change: impl FnOnce(&mut Event)) {
        let mut inner = self.inner();
        if let Some(event) = index.and_then(|i| inner.transcript.events.get_mut(i)) {
            change(event);
        }
    }

    /// Record an effect that was withheld: the first one is where the plugin stopped.
    pub fn withheld(&self, event: Event) {
        let index = self.push(event);
        let mut inner = self.inner();
        if inner.transcript.stopped_at.is_none() {
            // Past MAX_EVENTS the stop is still known, at the end of what was kept.
            inner.transcript.stopped_at = Some(index.unwrap_or(inner.transcript.events.len()));
        }
    }

    /// Dry modes: the call's own value of `key`, if it wrote one (`Some(None)`: deleted).
    pub fn overlaid(&self, key: &str) -> Option<Option<Vec<u8>>> {
        if !self.mode.dry() {
            return None;
        }
        self.inner().overlay.get(key).cloned()
    }

    /// Dry modes: the keys and bytes the overlay holds.
    pub fn overlay_size(&self) -> (usize, usize) {
        let inner = self.inner();
        let bytes = inner
            .overlay
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
            .sum();
        (inner.overlay.len(), bytes)
    }

    /// A read of `key` that found `value`, from the store or (`overlay`) from the call's own
    /// write. A store read's version is remembered, the first time, for a plan's check.
    pub fn read(&self, key: &str, value: Option<&[u8]>, overlay: bool) {
        if !self.record {
            return;
        }
        if !overlay && self.tape(|tape| tape.read(key, value)).is_some() {
            // A recorded live call: the tape holds the read, with its value; the transcript's
            // reads (a plan's check) and read events are not kept in an entry.
            return;
        }
        let version = version(value);
        if !overlay {
            self.remember(key, &version, false);
        }
        self.push(Event::StateRead {
            key: key.to_string(),
            version,
            overlay,
        });
    }

    /// A store read the gateway made for the call (a dry write's old value): remembered for a
    /// plan's check, not a step of the transcript.
    pub fn saw(&self, key: &str, value: Option<&[u8]>) {
        if self.record {
            self.remember(key, &version(value), false);
        }
    }

    fn remember(&self, key: &str, version: &str, list: bool) {
        let mut inner = self.inner();
        let transcript = &mut inner.transcript;
        let map = if list {
            &mut transcript.lists
        } else {
            &mut transcript.reads
        };
        if map.contains_key(key) {
            return;
        }
        if transcript.reads.len() + transcript.lists.len() >= MAX_READS {
            transcript.reads_overflow = true;
            return;
        }
        let map = if list {
            &mut transcript.lists
        } else {
            &mut transcript.reads
        };
        map.insert(key.to_string(), version.to_string());
    }

    /// A listing of `prefix` whose store part held `stored` (all of them, in order): in a dry
    /// mode, merged with the overlay. The merged keys, in order.
    pub fn list(&self, prefix: &str, stored: Vec<String>) -> Vec<String> {
        if self.record && self.tape(|tape| tape.listed(&stored)).is_some() {
            // A recorded live call (see `read`): the tape holds what the listing found.
            return stored;
        }
        if self.record {
            let digest = version(Some(stored.join("\n").as_bytes()));
            self.remember(prefix, &digest, true);
        }
        let keys = if self.mode.dry() {
            let inner = self.inner();
            let mut keys: std::collections::BTreeSet<String> = stored.into_iter().collect();
            for (key, value) in inner.overlay.range(prefix.to_string()..) {
                if !key.starts_with(prefix) {
                    break;
                }
                match value {
                    Some(_) => keys.insert(key.clone()),
                    None => keys.remove(key),
                };
            }
            keys.into_iter().collect()
        } else {
            stored
        };
        if !self.record {
            return keys;
        }
        self.push(Event::StateList {
            prefix: prefix.to_string(),
            keys: keys.len(),
        });
        keys
    }

    /// A write of `key` from `old` (when known) to `new` (`None`: deleted); `written`: whether
    /// it took effect. In a dry mode it is applied to the overlay, never to the store.
    pub fn write(
        &self,
        operation: WriteOp,
        key: &str,
        old: Option<Option<&[u8]>>,
        new: Option<&[u8]>,
        written: bool,
    ) {
        if self.mode.dry() && written {
            self.inner()
                .overlay
                .insert(key.to_string(), new.map(<[u8]>::to_vec));
        }
        if !self.record {
            return;
        }
        self.tape(|tape| tape.wrote(key));
        self.push(Event::StateWrite {
            operation,
            key: key.to_string(),
            old_version: old.map(version),
            new_version: version(new),
            size: new.map(<[u8]>::len),
            value: new.and_then(shown),
            written,
        });
    }

    /// A log message, as the log received it.
    pub fn log(&self, level: &tracing::Level, message: &str) {
        if !self.record {
            return;
        }
        self.push(Event::Log {
            level: level.to_string().to_ascii_lowercase(),
            message: message.to_string(),
        });
    }

    /// The transcript so far.
    pub fn transcript(&self) -> Transcript {
        self.inner().transcript.clone()
    }

    /// The tape so far (not yet redacted), if the call keeps one.
    pub fn tape_record(&self) -> Option<TapeRecord> {
        self.inner().tape.as_mut().map(Tape::finish)
    }
}

/// A body's start as a transcript shows it (lossy UTF-8, at most [`MAX_SHOWN_BODY`] bytes).
pub fn shown_body(body: &[u8]) -> String {
    let cut = &body[..body.len().min(MAX_SHOWN_BODY)];
    let mut text = String::from_utf8_lossy(cut).into_owned();
    if body.len() > MAX_SHOWN_BODY {
        text.push_str("...");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dry_call_reads_its_own_writes_and_lists_through_its_overlay() {
        let call = CallContext::new(Mode::Plan, false);
        assert_eq!(call.overlaid("a"), None);
        call.read("a", Some(b"1"), false);
        call.write(WriteOp::Set, "a", Some(Some(b"1")), Some(b"2"), true);
        call.write(WriteOp::Delete, "b", Some(Some(b"x")), None, true);
        call.write(WriteOp::CompareAndSwap, "c", Some(None), Some(b"3"), false);
        assert_eq!(call.overlaid("a"), Some(Some(b"2".to_vec())));
        assert_eq!(call.overlaid("b"), Some(None));
        // The swap that found another value changed nothing.
        assert_eq!(call.overlaid("c"), None);
        let keys = call.list("", vec!["b".into(), "d".into()]);
        assert_eq!(keys, ["a", "d"]);
        let transcript = call.transcript();
        assert_eq!(transcript.reads["a"], version(Some(b"1")));
        assert_eq!(transcript.events.len(), 5);
        assert_eq!(
            transcript.effects(),
            [
                format!("set a -> {}", version(Some(b"2"))),
                "delete b -> absent".to_string()
            ]
        );
    }

    #[test]
    fn a_live_call_that_records_nothing_keeps_nothing_and_has_no_overlay() {
        let call = CallContext::live();
        call.write(WriteOp::Set, "a", None, Some(b"2"), true);
        call.read("a", Some(b"2"), false);
        assert_eq!(call.overlaid("a"), None);
        assert_eq!(call.transcript(), Transcript::default());
        assert_eq!(call.list("", vec!["a".into()]), ["a"]);
    }

    #[test]
    fn the_first_withheld_effect_is_where_the_plugin_stopped_and_the_transcript_is_bounded() {
        let call = CallContext::new(Mode::Shadow, false);
        for i in 0..MAX_EVENTS + 10 {
            call.log(&tracing::Level::INFO, &format!("line {i}"));
            if i == 3 {
                call.withheld(Event::Http {
                    method: "POST".into(),
                    url: "http://x/".into(),
                    read: false,
                    sent: false,
                    status: None,
                    error: None,
                    body: Some(shown_body(b"secret body")),
                    body_size: Some(11),
                });
            }
        }
        let transcript = call.transcript();
        assert_eq!(transcript.events.len(), MAX_EVENTS);
        assert_eq!(transcript.dropped, 11);
        assert_eq!(transcript.stopped_at, Some(4));
        assert_eq!(transcript.effects(), ["POST http://x/"]);
        let redacted = transcript.redacted(|s| s.replace("secret", "[redacted]"));
        assert!(matches!(
            &redacted.events[4],
            Event::Http { body: Some(b), .. } if b == "[redacted] body"
        ));
    }
}
