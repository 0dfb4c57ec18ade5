//! Replication's HTTP faces, apart from the rules and the links: the control API ([`api`]),
//! players' login ([`login_http`], and [`gateway_login`] where a gateway takes it), the live
//! sector map ([`map`]) and Prometheus metrics ([`metrics`]).

pub mod api;
pub mod gateway_login;
pub mod login_http;
pub mod map;
pub mod metrics;
