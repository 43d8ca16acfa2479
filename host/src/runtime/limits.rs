//! What one call of a backend may use: memory, time, concurrent calls, answer size and its
//! state quota, from its config's `limits` table, checked here by the runtime that enforces them.

use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;
use toml::Spanned;

use crate::config_file::{ConfigError, HumanDuration, Source, check_timeout};
use crate::state::{MAX_VALUE_SIZE, StateQuota};

/// What one call of a backend may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// The most linear memory an instance may grow to.
    pub memory: usize,
    /// The wall-clock deadline of one call, instantiation included.
    pub timeout: Duration,
    /// How many calls of the backend may run at once; more wait for a free slot, up to the
    /// call's deadline.
    pub concurrency: usize,
    /// How many calls may wait for a slot; beyond that a call is refused at once (503).
    pub queue: usize,
    /// The largest answer the plugin may return, about as encoded for the client.
    pub max_response: usize,
    /// What the backend's state namespace may hold and how fast it may be written
    /// (`state_keys`, `state_bytes`, `state_value_size`, `state_writes_per_second`).
    pub state: StateQuota,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory: 64 << 20,
            timeout: Duration::from_secs(10),
            concurrency: 16,
            queue: 64,
            max_response: 4 << 20,
            state: StateQuota::default(),
        }
    }
}

/// A backend's `limits` as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimits {
    memory: Option<Spanned<ByteSize>>,
    timeout: Option<Spanned<HumanDuration>>,
    concurrency: Option<Spanned<usize>>,
    queue: Option<usize>,
    max_response: Option<Spanned<ByteSize>>,
    state_keys: Option<Spanned<u64>>,
    state_bytes: Option<Spanned<ByteSize>>,
    state_value_size: Option<Spanned<ByteSize>>,
    state_writes_per_second: Option<Spanned<u32>>,
}

/// Check backend `backend`'s `limits`; what is not set keeps its default.
pub(crate) fn parse(raw: RawLimits, backend: &str, source: &Source) -> Result<Limits, ConfigError> {
    let mut limits = Limits::default();
    let key = |name: &str| format!("backends.{backend}.limits.{name}");
    if let Some(memory) = raw.memory {
        let bytes = memory.get_ref().as_u64();
        // A component needs at least one 64 KiB page; past 4 GiB a 32-bit memory cannot grow.
        if !(64 << 10..=4 << 30).contains(&bytes) {
            return Err(source.invalid(
                memory.span(),
                key("memory"),
                "must be between 64KiB and 4GiB",
            ));
        }
        limits.memory = bytes as usize;
    }
    if let Some(timeout) = raw.timeout {
        limits.timeout = check_timeout(timeout, key("timeout"), source)?;
    }
    if let Some(concurrency) = raw.concurrency {
        if *concurrency.get_ref() == 0 {
            return Err(source.invalid(
                concurrency.span(),
                key("concurrency"),
                "must be at least 1",
            ));
        }
        limits.concurrency = concurrency.into_inner();
    }
    if let Some(queue) = raw.queue {
        limits.queue = queue;
    }
    if let Some(max_response) = raw.max_response {
        let bytes = max_response.get_ref().as_u64();
        if bytes == 0 {
            return Err(source.invalid(
                max_response.span(),
                key("max_response"),
                "must be more than 0",
            ));
        }
        limits.max_response = bytes as usize;
    }
    if let Some(keys) = raw.state_keys {
        if *keys.get_ref() == 0 {
            return Err(source.invalid(keys.span(), key("state_keys"), "must be at least 1"));
        }
        limits.state.keys = keys.into_inner();
    }
    if let Some(bytes) = raw.state_bytes {
        if bytes.get_ref().as_u64() == 0 {
            return Err(source.invalid(bytes.span(), key("state_bytes"), "must be more than 0"));
        }
        limits.state.bytes = bytes.get_ref().as_u64();
    }
    if let Some(size) = raw.state_value_size {
        let bytes = size.get_ref().as_u64();
        // The contract promises values up to 1 MiB at most; a backend may be given less.
        if !(1..=MAX_VALUE_SIZE as u64).contains(&bytes) {
            return Err(source.invalid(
                size.span(),
                key("state_value_size"),
                format!("must be between 1B and {}", ByteSize(MAX_VALUE_SIZE as u64)),
            ));
        }
        limits.state.value = bytes as usize;
    }
    if let Some(rate) = raw.state_writes_per_second {
        if *rate.get_ref() == 0 {
            return Err(source.invalid(
                rate.span(),
                key("state_writes_per_second"),
                "must be at least 1",
            ));
        }
        limits.state.writes_per_second = rate.into_inner();
    }
    Ok(limits)
}
