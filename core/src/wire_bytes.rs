//! `#[serde(with = "crate::wire_bytes")]` for a `Vec<u8>` field: serde writes a `Vec<u8>` as a
//! sequence, one byte at a time through the serializer; as bytes, postcard copies it in one go.
//! Both are the same on postcard's wire (a varint length, then the bytes), so this changes
//! speed, not the protocol.

use serde::de::{Error, SeqAccess, Visitor};
use serde::{Deserializer, Serializer};

pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bytes(bytes)
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    struct Bytes;
    impl<'de> Visitor<'de> for Bytes {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("bytes")
        }

        fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
            while let Some(b) = seq.next_element()? {
                v.push(b);
            }
            Ok(v)
        }
    }
    d.deserialize_byte_buf(Bytes)
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct AsSeq(Vec<u8>);

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct AsBytes(#[serde(with = "super")] Vec<u8>);

    #[test]
    fn the_wire_is_the_same_as_a_sequence_of_bytes() {
        let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let seq = postcard::to_allocvec(&AsSeq(data.clone())).unwrap();
        let bytes = postcard::to_allocvec(&AsBytes(data.clone())).unwrap();
        assert_eq!(seq, bytes, "old and new ends understand each other");
        let back: AsBytes = postcard::from_bytes(&seq).unwrap();
        assert_eq!(back.0, data);
    }
}
