//! `GET /sse/ticker` and `GET /ws/ticker`: the synthetic ticker.

use axum::Router;

use super::params::Params;
use super::stream::{self, FromQuery};
use crate::config::Config;
use crate::error::ApiError;
use crate::source::ticker::Ticker;
use crate::state::AppState;

impl FromQuery for Ticker {
    const PARAMS: &'static [&'static str] = &["rate", "count", "size", "tag"];

    fn from_query(params: &Params<'_>, config: &Config) -> Result<Self, ApiError> {
        let max_size = u64::try_from(config.max_size).unwrap_or(u64::MAX);
        Ok(Ticker {
            rate: params.u64_in("rate", 10, 0..=config.max_rate)?,
            count: params.u64_in("count", 0, 0..=u64::MAX)?,
            // Bounded by `max_size`, which is a usize.
            size: params.u64_in("size", 32, 0..=max_size)? as usize,
            stall: config.inject_pacer_stall,
        })
    }
}

/// The ticker's routes.
pub fn router() -> Router<AppState> {
    stream::routes::<Ticker>("ticker")
}
