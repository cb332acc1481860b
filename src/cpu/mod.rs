//! CPU paths. `reference` is the yardstick of SPEC.md; faster paths are
//! checked against it.

pub mod fast;
pub mod reference;
