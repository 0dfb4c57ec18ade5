//! Sector streams: a shard publishes the 30 Hz state of each sector it owns to whoever
//! subscribes to it (gateways for their players' interest, neighbouring shards for their border
//! bands), straight from the shard, not through the authority.
//!
//! One TCP connection per (subscriber, shard), framed like the shard link ([`encode_frame`],
//! [`FrameReader`]). The shard opens with a `Challenge`; the subscriber proves the fleet's
//! secret in `Hello` (an HMAC over both nonces and its name, [`subscriber_proof`]); the shard
//! proves it back in `Welcome` ([`publisher_proof`]). Then the subscriber says which sectors it
//! wants, as a whole set (`Subscribe`, level-triggered: a resend is harmless), and the shard
//! sends, every tick, one [`SectorFrame`] per wanted sector it owns that has news, then a
//! `Tick` that closes the tick and names the wanted sectors it does not own (a subscriber that
//! follows placement subscribes to the new owner too, and keeps the set here: the shard serves
//! a sector from the tick it owns it).
//!
//! Each sector's updates are encoded once per tick with the link codec ([`crate::codec`]) and
//! the same bytes go to every subscriber of the sector; a subscriber that joins gets the
//! sector's baselines as keyframes (`opened`) and the shared deltas from the next tick.
//!
//! A subscriber that needs only what lies near a sector's edges (a neighbouring shard, for its
//! border shadows) subscribes with a `band`: each of its sectors then streams only the entities
//! within `band` units of the sector's edges (encoded once per sector and band, shared by every
//! subscriber of that band). An entity that goes deeper into the sector leaves the stream with
//! a departure to its position there, which lies beyond the band: outside anything a shard
//! following its neighbours' bands wants, so it is let go.
//!
//! [`encode_frame`]: crate::protocol::encode_frame
//! [`FrameReader`]: crate::protocol::FrameReader

use serde::{Deserialize, Serialize};

use crate::geometry::SectorId;

use crate::handshake::{LinkProofs, Nonce, Proof};
use crate::ids::{EntityId, EntityKind, Epoch, ShardId};

/// Bumped on any incompatible change of the messages below.
pub const STREAM_PROTOCOL_VERSION: u32 = 2;
/// Most sectors one `Subscribe` may name: a gateway wants the leaves around its players, a
/// shard the neighbours of its own.
pub const MAX_SUBSCRIBED_SECTORS: usize = 4096;
/// Most subscribers a shard serves at once; more are refused at the handshake.
pub const MAX_SUBSCRIBERS: usize = 256;

/// Subscriber to shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SubscriberMessage {
    /// The answer to the shard's `Challenge`.
    Hello {
        protocol: u32,
        subscriber: String,
        nonce: Nonce,
        proof: Proof,
    },
    /// Every sector wanted from this shard from now on, replacing the previous set: whole, or
    /// (`band`) only the entities within that many units of each sector's edges.
    Subscribe {
        sectors: Vec<SectorId>,
        band: Option<f32>,
    },
}

/// Shard to subscriber.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PublisherMessage {
    Challenge {
        protocol: u32,
        nonce: Nonce,
    },
    Welcome {
        shard: ShardId,
        tick_hz: u32,
        proof: Proof,
    },
    Rejected {
        reason: String,
    },
    /// One wanted sector's news this tick.
    Sector(SectorFrame),
    /// The tick is complete; `unowned`: wanted sectors this shard does not simulate now. Sent
    /// every tick, so silence means the shard is gone.
    Tick {
        tick: u64,
        unowned: Vec<SectorId>,
    },
}

/// What changed in one sector this tick.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SectorFrame {
    pub sector: SectorId,
    pub tick: u64,
    /// The first frame of this sector on this connection: `updates` holds a keyframe of every
    /// entity in it and `entered` every entity, so the receiver starts this sector afresh.
    pub opened: bool,
    /// Entities that came into the sector (and the stream) this tick, with their kinds; their
    /// updates are keyframes.
    pub entered: Vec<(EntityId, EntityKind)>,
    /// Entities no longer in this sector's stream.
    pub left: Vec<Departure>,
    /// The link codec's batch of the entities whose quantized state changed (empty: none).
    #[serde(with = "crate::wire_bytes")]
    pub updates: Vec<u8>,
}

/// An entity that left a sector's stream.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Departure {
    pub id: EntityId,
    /// The epoch it had in this stream.
    pub epoch: Epoch,
    /// Where it went: `Some(position)` when it lives on (into another sector of this shard, or
    /// handed over to another owner, or released by placement: it shows again in the stream of
    /// the sector at that position, at the same or a newer epoch); `None` when it ended. An
    /// entity that ends in the tick it was adopted (a projectile at the end of its life) was
    /// never in the stream: its departure is sent all the same, so that a subscriber waiting
    /// for it stops waiting.
    pub to: Option<[f32; 2]>,
}

impl SectorFrame {
    /// Whether the frame carries anything a subscriber would act on.
    pub fn is_empty(&self) -> bool {
        !self.opened && self.entered.is_empty() && self.left.is_empty() && self.updates.is_empty()
    }
}

/// The stream link's proofs: a subscriber says hello, the shard welcomes it.
pub const STREAM_LINK: LinkProofs = LinkProofs::new(
    b"sidereal stream subscribe v1",
    b"sidereal stream welcome v1",
);

/// A band is a positive, finite width (a shadow margin: tens of units).
pub fn valid_band(band: Option<f32>) -> bool {
    band.is_none_or(|b| b.is_finite() && b > 0.0)
}

/// Whether `p`, in `sector`, is within `band` units of its edges (`None`: the whole sector).
pub fn in_band(sector: SectorId, band: Option<f32>, p: crate::Point) -> bool {
    let Some(band) = band else {
        return true;
    };
    let b = sector.bounds();
    let inside = (p.x - b.min.x)
        .min(b.max.x - p.x)
        .min(p.y - b.min.y)
        .min(b.max.y - p.y);
    inside <= f64::from(band)
}

/// A subscriber name is 1-63 of `[A-Za-z0-9.-]` (it labels logs and metrics).
pub fn valid_subscriber_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_band_holds_what_lies_near_the_edges_and_must_be_a_positive_width() {
        let s = SectorId::new(1, 0, 0).unwrap();
        let b = s.bounds();
        let (cx, cy) = ((b.min.x + b.max.x) / 2.0, (b.min.y + b.max.y) / 2.0);
        let at = |x: f64, y: f64| crate::Point::new(x, y);
        assert!(in_band(s, None, at(cx, cy)), "no band: everything");
        assert!(
            !in_band(s, Some(50.0), at(cx, cy)),
            "the middle is deep inside"
        );
        assert!(
            in_band(s, Some(50.0), at(b.min.x + 49.0, cy)),
            "near the west edge"
        );
        assert!(
            in_band(s, Some(50.0), at(cx, b.max.y - 50.0)),
            "on the band's inner line"
        );
        assert!(!in_band(s, Some(50.0), at(b.min.x + 51.0, b.max.y - 51.0)));
        assert!(valid_band(None) && valid_band(Some(50.0)));
        for bad in [0.0, -1.0, f32::NAN, f32::INFINITY] {
            assert!(!valid_band(Some(bad)), "{bad}");
        }
    }

    #[test]
    fn subscriber_names_are_short_and_plain() {
        assert!(valid_subscriber_name("gateway-7f9c.default"));
        assert!(!valid_subscriber_name(""));
        assert!(!valid_subscriber_name("a b"));
        assert!(!valid_subscriber_name(&"x".repeat(64)));
    }
}
