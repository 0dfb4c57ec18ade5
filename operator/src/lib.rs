//! The Sidereal operator: from the load shards measure, it splits hot sectors, merges cold
//! siblings, places leaves on shards and sizes the shard pool.
//!
//! [`policy`] holds every decision as a pure function; the controllers around it only observe
//! and act.

pub mod policy;
