//! tenant-access-operator: turns `TenantAccess` resources into signed Tinybird JWTs kept in
//! Secrets and Clerk JWT templates, renews and re-signs them, and health-checks the endpoints.
//!
//! The library holds all logic; the `tenant-access` binary only parses arguments.
//! Pure core: [`validate`], [`filter`], [`jwt`], [`desired`], [`admin_token`],
//! [`allowed_workspaces`], [`signing_workspace`].
//! Edges: [`cli`].

pub mod admin_server;
pub mod admin_token;
pub mod allowed_workspaces;
pub mod api;
pub mod apply;
pub mod backoff;
pub mod clerk;
pub mod cli;
pub mod conditions;
pub mod controller;
pub mod desired;
pub mod duration;
pub mod events;
pub mod filter;
pub mod health;
pub mod http;
pub mod jwt;
pub mod k8s_name_rules;
pub mod kube_client;
pub mod leader;
pub mod manifests;
pub mod metrics;
pub mod policy;
pub mod reconcile;
pub mod redact;
pub mod selector;
pub mod shortcode;
pub mod signing_workspace;
pub mod tinybird;
pub mod validate;
pub mod well_known;
