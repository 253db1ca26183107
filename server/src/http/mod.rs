//! HTTP handlers, by endpoint group. Each submodule builds its own piece of
//! the router beside its handlers; [`crate::app`] merges them. Only this
//! module and [`crate::transport`] know about axum.

pub mod admin;
pub mod chat;
mod credentials;
pub mod demo;
pub mod ops;
pub(crate) mod params;
pub mod replay;
pub(crate) mod stream;
pub mod ticker;
pub mod tokens;
pub mod topics;
