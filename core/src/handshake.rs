//! The shard link's challenge-response handshake. Replication opens with a fresh nonce; the
//! shard answers with its own nonce and an HMAC-SHA256 over both nonces and its name, keyed by
//! the shared secret; replication's `Welcome` carries its own HMAC over the same values in the
//! other order. The secret never crosses the wire, each side proves it knows it, and a recorded
//! handshake is worthless on another connection (it answers another nonce).

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// 32 random bytes chosen for one handshake.
pub type Nonce = [u8; 32];
/// An HMAC-SHA256 tag.
pub type Proof = [u8; 32];

/// The shortest shard secret replication accepts: it keys the HMAC, so it must not be
/// guessable (generate one: `openssl rand -hex 32`).
pub const MIN_SECRET_LEN: usize = 16;

/// Names that mean "no shard" in the mirror; no shard may take them.
pub const RESERVED_SHARD_NAMES: [&str; 2] = ["unplaced", "archived"];

/// A fresh nonce from the operating system's random source.
pub fn fresh_nonce() -> Nonce {
    let mut n = [0u8; 32];
    getrandom::fill(&mut n).expect("the operating system's random source");
    n
}

/// One link's pair of HMAC labels: the connecting side proves it knows the secret with
/// `hello`, the accepting side answers with `welcome`. Every link has its own pair, so a proof
/// made for one link (or one side) is worthless on any other.
#[derive(Debug, Clone, Copy)]
pub struct LinkProofs {
    hello: &'static [u8],
    welcome: &'static [u8],
}

/// The shard link: a shard says hello, replication welcomes it.
pub const SHARD_LINK: LinkProofs = LinkProofs::new(
    b"sidereal shard hello v1",
    b"sidereal replication welcome v1",
);

impl LinkProofs {
    pub const fn new(hello: &'static [u8], welcome: &'static [u8]) -> Self {
        Self { hello, welcome }
    }

    /// What the connecting peer `name` sends for the acceptor's `challenge` and its own `nonce`.
    pub fn hello(&self, secret: &str, challenge: &Nonce, nonce: &Nonce, name: &str) -> Proof {
        tag(mac(secret, self.hello, challenge, nonce, name))
    }

    /// Whether `proof` is the connecting peer's proof for these values (in constant time).
    pub fn verify_hello(
        &self,
        secret: &str,
        challenge: &Nonce,
        nonce: &Nonce,
        name: &str,
        proof: &Proof,
    ) -> bool {
        mac(secret, self.hello, challenge, nonce, name)
            .verify_slice(proof)
            .is_ok()
    }

    /// What the acceptor sends in its welcome to prove it knows `secret` too (the nonces in
    /// the other order, under the other label).
    pub fn welcome(&self, secret: &str, challenge: &Nonce, nonce: &Nonce, name: &str) -> Proof {
        tag(mac(secret, self.welcome, nonce, challenge, name))
    }

    /// Whether `proof` is the acceptor's proof for these values (in constant time).
    pub fn verify_welcome(
        &self,
        secret: &str,
        challenge: &Nonce,
        nonce: &Nonce,
        name: &str,
        proof: &Proof,
    ) -> bool {
        mac(secret, self.welcome, nonce, challenge, name)
            .verify_slice(proof)
            .is_ok()
    }
}

fn tag(m: Hmac<Sha256>) -> Proof {
    m.finalize().into_bytes().into()
}

fn mac(secret: &str, label: &[u8], first: &Nonce, second: &Nonce, name: &str) -> Hmac<Sha256> {
    let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    m.update(label);
    m.update(first);
    m.update(second);
    m.update(name.as_bytes());
    m
}
