//! The reconcile pipeline's pure stages (fetch and apply live in `crate::runtime::controller`).

pub mod admit;
pub mod decide;
pub mod plan;
