//! The players' login API on the wire (`POST /v1/accounts`, `POST /v1/login`), defined once for
//! replication, the client library and the bots. These endpoints need no control token: a
//! player proves who it is with its password and gets a netcode connect token for the game
//! ports.

use serde::{Deserialize, Serialize};

/// Netcode protocol id of Sidereal's game protocol: a client and a server with different ids
/// refuse each other's tokens. Bump it when the client protocol changes incompatibly.
pub const GAME_PROTOCOL_ID: u64 = 0x5349_4445_5245_0001;

/// Bytes of a netcode connect token (before base64).
pub const CONNECT_TOKEN_BYTES: usize = 2048;

/// Largest login or registration body replication reads; anything bigger is a 413.
pub const MAX_LOGIN_BODY_BYTES: usize = 1024;

/// Body of both endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    pub name: String,
    pub password: String,
}

/// What a successful registration (201) or login (200) returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoginReply {
    pub name: String,
    /// The player's netcode client id: the same at every login.
    pub player_id: u64,
    /// The entity id of the player's ship: the same at every login while the ship exists.
    pub ship: u64,
    /// The netcode connect token, standard base64 of [`CONNECT_TOKEN_BYTES`] bytes.
    pub token: String,
    /// When the token stops being accepted for a new connection, in Unix seconds.
    pub expires_at: u64,
    /// UDP game addresses the token is valid for, in the order a client should try them.
    pub servers: Vec<String>,
    /// WebSocket game addresses (`host:port`, plain `ws://`) the token is valid for too.
    #[serde(default)]
    pub websocket: Vec<String>,
}

/// Why a name or password is not acceptable for a new account.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    #[error("name must be 3 to 32 characters of a-z, 0-9, '-' and '_' (got {0} characters)")]
    NameLength(usize),
    #[error("name may only contain a-z, 0-9, '-' and '_'")]
    NameCharacters,
    #[error("password must be 8 to 128 bytes (got {0})")]
    PasswordLength(usize),
}

/// Checks a new account's name and password. Pure: replication and clients share it, so a
/// client can refuse bad input before sending it.
pub fn validate_credentials(c: &Credentials) -> Result<(), CredentialsError> {
    validate_name(&c.name)?;
    if !(8..=128).contains(&c.password.len()) {
        return Err(CredentialsError::PasswordLength(c.password.len()));
    }
    Ok(())
}

/// Whether `name` could be an account's: 3 to 32 of `[a-z0-9_-]`. Logins check it too, so a
/// name no account can have is refused before any lookup, lock or hash.
pub fn validate_name(name: &str) -> Result<(), CredentialsError> {
    let n = name.chars().count();
    if !(3..=32).contains(&n) {
        return Err(CredentialsError::NameLength(n));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        return Err(CredentialsError::NameCharacters);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(name: &str, password: &str) -> Credentials {
        Credentials {
            name: name.into(),
            password: password.into(),
        }
    }

    #[test]
    fn names_and_passwords_are_checked_before_anything_is_hashed() {
        assert_eq!(validate_credentials(&creds("ada", "correct horse")), Ok(()));
        assert_eq!(
            validate_credentials(&creds("ad", "correct horse")),
            Err(CredentialsError::NameLength(2))
        );
        assert_eq!(
            validate_credentials(&creds(&"a".repeat(33), "correct horse")),
            Err(CredentialsError::NameLength(33))
        );
        assert_eq!(
            validate_credentials(&creds("Ada", "correct horse")),
            Err(CredentialsError::NameCharacters)
        );
        assert_eq!(
            validate_credentials(&creds("ad a", "correct horse")),
            Err(CredentialsError::NameCharacters)
        );
        assert_eq!(
            validate_credentials(&creds("ada", "short")),
            Err(CredentialsError::PasswordLength(5))
        );
        assert_eq!(
            validate_credentials(&creds("ada", &"x".repeat(129))),
            Err(CredentialsError::PasswordLength(129))
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        let r: Result<Credentials, _> =
            serde_json::from_str(r#"{"name":"ada","password":"correct horse","admin":true}"#);
        assert!(r.is_err());
    }
}
