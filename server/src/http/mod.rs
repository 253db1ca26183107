//! HTTP handlers, by endpoint group. Each submodule builds its own piece of
//! the router beside its handlers; [`crate::app`] merges them. Only this
//! module and [`crate::transport`] know about axum.

mod credentials;
pub mod demo;
pub mod ops;
mod params;
pub mod replay;
mod stream;
pub mod ticker;
pub mod tokens;
pub mod topics;
