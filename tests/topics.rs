//! Durable topics, each test on SQLite and on a real PostgreSQL. One module
//! per sub-subject:
//!
//! - [`resume`]: exactly-once delivery across resumes while publishing,
//!   durability across a restart, where a subscription starts, WebSocket
//!   publishing with acknowledgements;
//! - [`slow`]: slow subscribers, caught up from the store or disconnected;
//! - [`retention`]: retention by count and by age, and gap notices;
//! - [`idempotency`]: publishes retried with their idempotency key, stored
//!   once;
//! - [`refusals`]: bad requests that store nothing, tokens;
//! - [`jwt`]: per-user JWTs: refusals, topic claims, expiry, refresh and
//!   revocation on live streams;
//! - [`operations`]: the admin API, retention rules by pattern, the bound
//!   on topics, idle topics removed;
//! - [`paced`]: the connection the slow subscriber reads through.
//!
//! The tests are listed here, once, so that each runs as
//! `topics::sqlite::…` and `topics::postgres::…`.

use serde_json::{Value, json};
use streamgauge_server::Config;

use self::idempotency::{
    a_retried_publish_gets_its_first_seq_and_stores_nothing,
    an_expired_key_is_deleted_and_its_retry_stored_anew, concurrent_duplicates_store_one_event,
    keys_are_resolved_within_a_group_commit_and_expire,
};
use self::jwt::{
    a_denylisted_subject_is_cut_off_while_streaming, a_publisher_is_held_to_its_topic_patterns,
    a_websocket_refreshes_its_token_and_streams_on,
    an_expired_subscriber_resumes_with_a_new_token_losing_nothing, jwt_refusals_name_their_reason,
};
use self::operations::{
    a_full_publish_queue_refuses_at_once_and_counts_it,
    a_publish_that_would_create_a_topic_beyond_the_bound_is_refused,
    an_idle_topic_is_removed_and_a_watched_one_kept,
    retention_rules_keep_each_topic_by_its_pattern,
    the_admin_api_lists_shows_trims_and_deletes_topics,
    without_an_admin_token_there_is_no_admin_api,
};
use self::refusals::{
    bad_requests_are_refused_precisely_and_store_nothing, tokens_guard_publishing_and_reading,
};
use self::resume::{
    acknowledged_events_survive_a_restart_and_resume_across_it,
    every_acknowledged_event_reaches_resuming_subscribers_exactly_once,
    websocket_subscribers_publish_and_get_acknowledgements, where_a_subscription_starts,
};
use self::retention::{
    a_hole_inside_the_history_is_announced_not_skipped, retention_by_age_is_announced_as_a_gap,
    retention_by_count_is_announced_as_a_gap_before_the_rest,
    retention_by_count_trims_a_topic_far_over_the_limit_in_chunks,
};
use self::slow::{
    a_slow_subscriber_delays_no_one_and_catches_up_without_loss,
    a_slow_subscriber_under_the_disconnect_policy_is_closed_and_resumes,
};
use crate::support::{Backend, Database, Item, TestServer};

mod idempotency;
mod jwt;
mod operations;
mod paced;
mod refusals;
mod resume;
mod retention;
mod slow;

on_both_databases!(
    every_acknowledged_event_reaches_resuming_subscribers_exactly_once,
    a_slow_subscriber_delays_no_one_and_catches_up_without_loss,
    a_slow_subscriber_under_the_disconnect_policy_is_closed_and_resumes,
    acknowledged_events_survive_a_restart_and_resume_across_it,
    retention_by_count_is_announced_as_a_gap_before_the_rest,
    retention_by_count_trims_a_topic_far_over_the_limit_in_chunks,
    retention_by_age_is_announced_as_a_gap,
    where_a_subscription_starts,
    bad_requests_are_refused_precisely_and_store_nothing,
    tokens_guard_publishing_and_reading,
    websocket_subscribers_publish_and_get_acknowledgements,
    a_hole_inside_the_history_is_announced_not_skipped,
    jwt_refusals_name_their_reason,
    a_publisher_is_held_to_its_topic_patterns,
    an_expired_subscriber_resumes_with_a_new_token_losing_nothing,
    a_websocket_refreshes_its_token_and_streams_on,
    a_denylisted_subject_is_cut_off_while_streaming,
    the_admin_api_lists_shows_trims_and_deletes_topics,
    without_an_admin_token_there_is_no_admin_api,
    retention_rules_keep_each_topic_by_its_pattern,
    a_publish_that_would_create_a_topic_beyond_the_bound_is_refused,
    an_idle_topic_is_removed_and_a_watched_one_kept,
    a_full_publish_queue_refuses_at_once_and_counts_it,
    a_retried_publish_gets_its_first_seq_and_stores_nothing,
    keys_are_resolved_within_a_group_commit_and_expire,
    an_expired_key_is_deleted_and_its_retry_stored_anew,
    concurrent_duplicates_store_one_event,
);

/// A server with `config` over a fresh database of `backend`.
async fn server(backend: Backend, config: Config) -> (TestServer, Database) {
    let database = Database::fresh(backend).await;
    let server = TestServer::start_on(config, &database).await;
    (server, database)
}

/// An event's `seq`.
fn seq(event: &Value) -> u64 {
    event["seq"].as_u64().expect("a seq")
}

/// A gap notice of events `from` through `to`, for `reason`.
fn gap(from: u64, to: u64, reason: &str) -> Item {
    Item::Gap(json!({ "from": from, "to": to, "reason": reason }))
}
