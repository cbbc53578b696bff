//! What talks to the outside world: Kubernetes writes and client, events, Tinybird, Clerk, the
//! HTTP client they share, and health probing.

pub mod apply;
pub mod clerk;
pub mod events;
pub mod health;
pub mod http;
pub mod kube_client;
pub mod kube_error;
pub mod manifests;
pub mod request_counts;
pub mod tinybird;
