//! One test binary for everything that needs a real cluster (linking is the slow part).

mod admission;
mod chart;
mod operator;
mod pods;
mod pools;
mod yaml;
