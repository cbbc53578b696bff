//! The running operator: watches, caches and controllers ([`controller`]), leader election, the
//! admin server and the metrics it serves.

pub mod admin_server;
pub mod controller;
pub mod exposition;
pub mod health;
pub mod leader;
pub mod metrics;
pub mod process_metrics;
pub mod webhook;
