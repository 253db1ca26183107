//! HTTP handlers, by endpoint group. Each submodule builds its own piece of
//! the router beside its handlers; [`crate::app`] merges them. Only this
//! module and [`crate::transport`] know about axum.

pub mod ops;
mod params;
mod stream;
pub mod ticker;
pub mod tokens;
