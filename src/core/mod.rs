//! The pure core: functions of their inputs and `now`, no I/O. The token (sign, resolve the
//! workspace, build the desired objects), spec validation and policy, and the plan.

pub mod admin_token;
pub mod allowed_workspaces;
pub mod backoff;
pub mod clock;
pub mod conditions;
pub mod desired;
pub mod duration;
pub mod filter;
pub mod isolation_report;
pub mod jwt;
pub mod k8s_name_rules;
pub mod key_refusal;
pub mod pipe_isolation;
pub mod policy;
pub mod reconcile;
pub mod redact;
pub mod restarts;
pub mod rotation;
pub mod secret_writers;
pub mod selector;
pub mod shortcode;
pub mod signing_workspace;
pub mod template_sweep;
pub mod validate;
pub mod well_known;
