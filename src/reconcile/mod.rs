//! The reconcile pipeline's pure stages (fetch and apply live in `crate::controller`).

pub mod admit;
pub mod decide;
pub mod plan;
