//! Tinybird and Clerk API emulators for tenant-access-operator's tests and demo.
//!
//! Each emulator is a small axum server that follows `docs/external-apis.md`: the Tinybird one
//! verifies JWTs exactly as Tinybird does (HS256 with the current admin token, no leeway,
//! `fixed_params` winning over query parameters, per-name rate limits), the Clerk one implements
//! the JWT template API with its errors and request budget and mints tokens from templates.
//!
//! Start one in-process with [`TinybirdEmulator::start`] or [`ClerkEmulator::start`] (they bind
//! `127.0.0.1:0` by default), talk to it through [`TinybirdEmulator::base_url`] or
//! [`ClerkEmulator::api_url`], and drop the handle (or call `shutdown`) to stop it. Test-only
//! controls (fault injection, pipe edits, identity switching, the injectable [`Clock`]) are on the
//! handles and under `/_emulator/` on each server.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod clerk;
mod clock;
mod control;
mod error;
pub mod faults;
mod random;
pub mod request_log;
mod server;
mod sync;
pub mod tinybird;

pub use clerk::{ClerkConfig, ClerkEmulator, Identity, JwtTemplate, TestOrg, TestUser};
pub use clock::Clock;
pub use error::EmulatorError;
pub use faults::Fault;
pub use request_log::{CallOf, RequestLog, RequestRecord};
pub use tinybird::{
    AdminTokenParts, Column, DataSourceDefinition, PipeDefinition, PipeNode, TinybirdConfig,
    TinybirdEmulator, chdb_python_from_env,
};
