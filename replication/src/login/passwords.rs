//! Password hashing: Argon2id with its default (OWASP-recommended) parameters, stored as a PHC
//! string that carries its own salt and parameters.

use std::sync::LazyLock;

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};

/// Hashes `password` with a fresh random salt.
pub fn hash(password: &str) -> Result<String, String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Whether `password` matches `phc`. With no stored hash (no such account) it still does the
/// same work against a dummy, so a wrong name takes as long as a wrong password.
pub fn verify(password: &str, phc: Option<&str>) -> bool {
    static DUMMY: LazyLock<String> =
        LazyLock::new(|| hash("no account has this password").expect("hashing works"));
    let (stored, real) = match phc {
        Some(p) => (p, true),
        None => (DUMMY.as_str(), false),
    };
    let Ok(parsed) = PasswordHash::new(stored) else {
        return false;
    };
    Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
        && real
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let h = hash("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify("correct horse", Some(&h)));
        assert!(!verify("correct horsf", Some(&h)));
        assert!(!verify("correct horse", None));
        assert!(!verify("correct horse", Some("not a phc string")));
        assert_ne!(hash("correct horse").unwrap(), h, "salted");
    }
}
