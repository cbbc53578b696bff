//! tenant-access-operator: turns `TenantAccess` resources into signed Tinybird JWTs kept in
//! Secrets and Clerk JWT templates, renews and re-signs them, and health-checks the endpoints.
//!
//! The library holds all logic; the `tenant-access` binary only parses arguments. The layers,
//! each depending only on those above it (except the CRD schema's duration pattern, from
//! [`core::duration`]):
//! - [`api`]: the custom resource types;
//! - [`core`]: the pure core: the token ([`core::jwt`], [`core::admin_token`],
//!   [`core::signing_workspace`], [`core::desired`]), spec validation and policy
//!   ([`core::validate`], [`core::filter`], [`core::policy`], [`core::allowed_workspaces`]) and
//!   the plan ([`core::reconcile`]);
//! - [`adapters`]: what talks to the outside: Kubernetes writes, Tinybird, Clerk, health probing;
//! - [`runtime`]: watches, caches, controllers, leader election, the admin server;
//! - [`cli`]: the command line.

pub mod adapters;
pub mod api;
pub mod cli;
pub mod core;
pub mod runtime;
