//! Netcode connect tokens: what a player gets for a correct password, and what the game ports
//! accept. Encrypted with the netcode private key, which comes from configuration or a Secret
//! and never from the repository.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use lightyear::netcode::{ConnectToken, Key, USER_DATA_BYTES};
use sidereal_core::login::GAME_PROTOCOL_ID;

/// The 32-byte netcode private key. Its `Debug` never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct NetcodeKey(pub Key);

impl fmt::Debug for NetcodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NetcodeKey(..)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the netcode key must be 64 hexadecimal characters (32 bytes), got {0} characters")]
    Length(usize),
    #[error("the netcode key must be hexadecimal")]
    NotHex,
}

impl FromStr for NetcodeKey {
    type Err = KeyError;

    /// 64 hexadecimal characters, surrounding whitespace ignored (a key file's newline).
    fn from_str(s: &str) -> Result<Self, KeyError> {
        let s = s.trim();
        if s.len() != 64 {
            return Err(KeyError::Length(s.chars().count()));
        }
        let mut key = [0u8; 32];
        for (i, pair) in s.as_bytes().chunks(2).enumerate() {
            let hex = std::str::from_utf8(pair).map_err(|_| KeyError::NotHex)?;
            key[i] = u8::from_str_radix(hex, 16).map_err(|_| KeyError::NotHex)?;
        }
        Ok(NetcodeKey(key))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot make a connect token: {0}")]
pub struct TokenError(String);

/// A connect token for `player_id` flying `ship`, valid for new connections to `servers` for
/// `valid_for`, serialized to its 2048 bytes, and when it expires (Unix seconds). Its netcode
/// client id is `session` (a fresh [`session_id`]); the player and ship ids ride in the sealed user data, so the
/// game port learns them from the token alone.
pub fn issue(
    key: &NetcodeKey,
    servers: &[SocketAddr],
    session: u64,
    player_id: u64,
    ship: u64,
    valid_for: Duration,
) -> Result<(Vec<u8>, u64), TokenError> {
    let expire = i32::try_from(valid_for.as_secs().max(1)).unwrap_or(i32::MAX);
    let token = ConnectToken::build(servers, GAME_PROTOCOL_ID, session, key.0)
        .expire_seconds(expire)
        .user_data(user_data(ship, player_id))
        .generate()
        .map_err(|e| TokenError(e.to_string()))?;
    let expires_at = token.expire_timestamp();
    let bytes = token
        .try_into_bytes()
        .map_err(|e| TokenError(e.to_string()))?;
    Ok((bytes.to_vec(), expires_at))
}

/// The token's user data: the ship id and the player id, then zeros.
pub fn user_data(ship: u64, player_id: u64) -> [u8; USER_DATA_BYTES] {
    let mut data = [0u8; USER_DATA_BYTES];
    data[..8].copy_from_slice(&ship.to_le_bytes());
    data[8..16].copy_from_slice(&player_id.to_le_bytes());
    data
}

/// The ship id a token's user data carries.
pub fn ship_of(user_data: &[u8; USER_DATA_BYTES]) -> u64 {
    u64::from_le_bytes(user_data[..8].try_into().expect("8 bytes"))
}

/// The player id a token's user data carries.
pub fn player_of(user_data: &[u8; USER_DATA_BYTES]) -> u64 {
    u64::from_le_bytes(user_data[8..16].try_into().expect("8 bytes"))
}

/// A fresh random session id: netcode's client id for one connection. Netcode refuses a client
/// id that is still connected, so a player who drops and logs in again would wait out the old
/// connection's timeout if the player id were the client id.
pub fn session_id() -> u64 {
    let bytes = random_bytes();
    u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"))
}

/// 32 bytes from the operating system's random source (netcode's own key generator).
pub fn random_bytes() -> [u8; 32] {
    lightyear::netcode::generate_key()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_parsed_from_hex_and_never_printed() {
        let hex = "00".repeat(31) + "ff";
        let k: NetcodeKey = format!("{hex}\n").parse().unwrap();
        assert_eq!(k.0[31], 0xff);
        assert_eq!(format!("{k:?}"), "NetcodeKey(..)");
        assert_eq!("abc".parse::<NetcodeKey>(), Err(KeyError::Length(3)));
        assert_eq!("zz".repeat(32).parse::<NetcodeKey>(), Err(KeyError::NotHex));
    }

    #[test]
    fn a_token_is_2048_bytes_that_netcode_reads_back_with_its_expiry() {
        let key = NetcodeKey(random_bytes());
        let servers = ["127.0.0.1:7702".parse().unwrap()];
        let (bytes, expires_at) =
            issue(&key, &servers, session_id(), 42, 9, Duration::from_secs(60)).unwrap();
        assert_eq!(bytes.len(), sidereal_core::login::CONNECT_TOKEN_BYTES);
        let back = ConnectToken::try_from_bytes(&bytes).unwrap();
        assert_eq!(back.expire_timestamp(), expires_at);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(
            (now + 59..=now + 61).contains(&expires_at),
            "{expires_at} vs {now}"
        );
    }

    /// Opens a token's private part the way a netcode 1.02 server does (XChaCha20-Poly1305
    /// with the version, protocol id and expiry as associated data), independently of
    /// lightyear: only the right key opens it. Returns the plaintext.
    fn open_private(bytes: &[u8], key: &Key) -> Option<Vec<u8>> {
        use chacha20poly1305::aead::AeadInPlace;
        use chacha20poly1305::{KeyInit, Tag, XChaCha20Poly1305, XNonce};
        let (version, rest) = bytes.split_at(13);
        let protocol = &rest[..8];
        let expire = &rest[16..24];
        let nonce = XNonce::from_slice(&rest[24..48]);
        let mut private = rest[48..48 + 1024].to_vec();
        let (ciphertext, tag) = private.split_at_mut(1024 - 16);
        let aad = [version, protocol, expire].concat();
        XChaCha20Poly1305::new(key.into())
            .decrypt_in_place_detached(nonce, &aad, ciphertext, Tag::from_slice(tag))
            .ok()?;
        Some(ciphertext.to_vec())
    }

    /// The client id at the start of the plaintext (lightyear writes integers big-endian).
    fn client_id(plain: &[u8]) -> u64 {
        u64::from_be_bytes(plain[..8].try_into().unwrap())
    }

    #[test]
    fn a_token_carries_its_player_and_ship_sealed_with_the_servers_key() {
        let key = NetcodeKey(random_bytes());
        let servers = ["127.0.0.1:7702".parse().unwrap()];
        let player = 0x0123_4567_89ab_u64;
        let issue_one = || {
            issue(
                &key,
                &servers,
                session_id(),
                player,
                9,
                Duration::from_secs(60),
            )
            .unwrap()
        };
        let (bytes, _) = issue_one();
        assert_eq!(&bytes[..13], b"NETCODE 1.02\0");
        assert_eq!(bytes[13..21], GAME_PROTOCOL_ID.to_be_bytes());
        let plain = open_private(&bytes, &key.0).expect("the server's key opens it");
        let mut data = [0u8; USER_DATA_BYTES];
        data[..16].copy_from_slice(&user_data(9, player)[..16]);
        assert!(
            plain.windows(16).any(|w| w == &data[..16]),
            "the ship and player ids are in the sealed part"
        );
        assert_eq!((ship_of(&data), player_of(&data)), (9, player));
        // Each token is a session of its own.
        let again = open_private(&issue_one().0, &key.0).unwrap();
        assert_ne!(client_id(&plain), client_id(&again));
        assert_ne!(
            client_id(&plain),
            player,
            "the client id is not the player id"
        );
        assert_eq!(open_private(&bytes, &random_bytes()), None, "another key");
        let mut forged = bytes.clone();
        forged[29] ^= 1; // the expiry, which the seal covers
        assert_eq!(open_private(&forged, &key.0), None, "a changed expiry");
    }
}
