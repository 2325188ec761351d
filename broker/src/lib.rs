//! Strata broker: the Kafka wire protocol over a durable local partition log.
//!
//! A request's path: [`server`] (connection) → [`protocol`] (frame, decode) →
//! [`handlers`] (one module per API family) → [`broker`] and [`registry`] (topics) →
//! [`partition`] → [`log`] (segments on disk). Cluster metadata sits behind
//! [`cluster::MetadataStore`].
//!
//! Layers, bottom first (a module uses its own layer or below; `tests/architecture.rs`
//! fails on an upward import or a cycle): `sys`, `ratelimit`, `supervise`, `protocol` ·
//! `config` · `log` · `topic_config`, `telemetry` · `cluster` · `security` · `partition` ·
//! `replication`, `tier` · `diskless` · `registry` · `group` · `broker` · `handlers`, `admin` · `server`.

pub mod admin;
pub mod broker;
pub mod cluster;
pub mod config;
pub mod cost;
pub mod diskless;
pub mod group;
pub mod handlers;
pub mod log;
pub mod partition;
pub mod protocol;
pub mod ratelimit;
pub mod registry;
pub mod replication;
pub mod security;
pub mod server;
pub mod supervise;
pub mod sys;
pub mod telemetry;
pub mod tier;
pub mod topic_config;
pub mod txn;
