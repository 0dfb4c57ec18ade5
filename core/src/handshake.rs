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

pub(crate) fn mac(
    secret: &str,
    label: &[u8],
    first: &Nonce,
    second: &Nonce,
    shard: &str,
) -> Hmac<Sha256> {
    let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    m.update(label);
    m.update(first);
    m.update(second);
    m.update(shard.as_bytes());
    m
}

/// What a shard named `shard` sends to prove it knows `secret`, for replication's `challenge`
/// and its own `nonce`.
pub fn shard_proof(secret: &str, challenge: &Nonce, nonce: &Nonce, shard: &str) -> Proof {
    mac(secret, b"sidereal shard hello v1", challenge, nonce, shard)
        .finalize()
        .into_bytes()
        .into()
}

/// Whether `proof` is the shard's proof for these values (in constant time).
pub fn verify_shard_proof(
    secret: &str,
    challenge: &Nonce,
    nonce: &Nonce,
    shard: &str,
    proof: &Proof,
) -> bool {
    mac(secret, b"sidereal shard hello v1", challenge, nonce, shard)
        .verify_slice(proof)
        .is_ok()
}

/// What replication sends in its `Welcome` to prove it knows `secret` too.
pub fn replication_proof(secret: &str, challenge: &Nonce, nonce: &Nonce, shard: &str) -> Proof {
    mac(
        secret,
        b"sidereal replication welcome v1",
        nonce,
        challenge,
        shard,
    )
    .finalize()
    .into_bytes()
    .into()
}

/// Whether `proof` is replication's proof for these values (in constant time).
pub fn verify_replication_proof(
    secret: &str,
    challenge: &Nonce,
    nonce: &Nonce,
    shard: &str,
    proof: &Proof,
) -> bool {
    mac(
        secret,
        b"sidereal replication welcome v1",
        nonce,
        challenge,
        shard,
    )
    .verify_slice(proof)
    .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_side_verifies_the_others_proof_and_nothing_else() {
        let (c, n) = (fresh_nonce(), fresh_nonce());
        assert_ne!(c, n, "nonces are fresh");
        let p = shard_proof("a-long-enough-secret", &c, &n, "shard-0");
        assert!(verify_shard_proof(
            "a-long-enough-secret",
            &c,
            &n,
            "shard-0",
            &p
        ));
        // Another secret, another challenge (a replay), another name: refused.
        assert!(!verify_shard_proof(
            "another-long-secret!",
            &c,
            &n,
            "shard-0",
            &p
        ));
        assert!(!verify_shard_proof(
            "a-long-enough-secret",
            &fresh_nonce(),
            &n,
            "shard-0",
            &p
        ));
        assert!(!verify_shard_proof(
            "a-long-enough-secret",
            &c,
            &n,
            "shard-1",
            &p
        ));
        // The shard's proof is not replication's: neither can be reflected to the other side.
        assert!(!verify_replication_proof(
            "a-long-enough-secret",
            &c,
            &n,
            "shard-0",
            &p
        ));
        let r = replication_proof("a-long-enough-secret", &c, &n, "shard-0");
        assert!(verify_replication_proof(
            "a-long-enough-secret",
            &c,
            &n,
            "shard-0",
            &r
        ));
        assert!(!verify_shard_proof(
            "a-long-enough-secret",
            &c,
            &n,
            "shard-0",
            &r
        ));
    }
}
