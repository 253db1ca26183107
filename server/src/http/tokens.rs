//! `GET /sse/tokens` and `GET /ws/tokens`: the LLM-like token stream.

use std::time::Duration;

use axum::Router;

use super::params::Params;
use super::stream::{self, FromQuery};
use crate::config::Config;
use crate::error::ApiError;
use crate::source::tokens::Tokens;
use crate::state::AppState;

/// Longest `ttft_ms` and `jitter_ms` a client may ask for: ten minutes, far
/// beyond any real model's first token, yet bounded.
pub(super) const MAX_DELAY_MS: u64 = 600_000;

/// Most `tokens` per stream: bounded so that every token stream ends.
pub(super) const MAX_TOKENS: u64 = 10_000_000;

impl FromQuery for Tokens {
    const PARAMS: &'static [&'static str] = &["ttft_ms", "tps", "tokens", "jitter_ms", "tag"];

    fn from_query(params: &Params<'_>, config: &Config) -> Result<Self, ApiError> {
        Ok(Tokens {
            ttft: Duration::from_millis(params.u64_in("ttft_ms", 200, 0..=MAX_DELAY_MS)?),
            tps: params.u64_in("tps", 50, 0..=config.max_rate)?,
            tokens: params.u64_in("tokens", 100, 0..=MAX_TOKENS)?,
            jitter: Duration::from_millis(params.u64_in("jitter_ms", 0, 0..=MAX_DELAY_MS)?),
            stall: config.inject_pacer_stall,
        })
    }
}

/// The token stream's routes.
pub fn router() -> Router<AppState> {
    stream::routes::<Tokens>("tokens")
}
