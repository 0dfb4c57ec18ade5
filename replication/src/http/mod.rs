//! Replication's HTTP faces, apart from the rules and the links: the control API ([`api`]),
//! players' login ([`login_http`], and [`gateway_login`] where a gateway takes it), the live
//! sector map ([`map`]), Prometheus metrics ([`metrics`]), and what a standby serves while it
//! waits ([`standby`]).

pub mod api;
pub mod gateway_login;
pub mod login_http;
pub mod map;
pub mod metrics;
pub mod standby;
