//! End-to-end tests: the real binary, real compiled plugins, a real socket on 127.0.0.1.

mod aws;
mod backup;
mod cli;
mod contracts;
mod deploy;
mod edge;
mod faults;
mod hardening;
mod kit;
mod lifecycle;
mod metrics;
mod operating;
mod outbound;
mod ownership;
mod podman;
mod pool;
mod private_ca;
mod providers;
mod python;
mod redaction;
mod reload;
mod replicas;
mod routing;
mod support;
mod telemetry;
mod validation;
