//! Virtual clients.

pub mod http;
pub mod sse_parser;
