//! LEB128 varints and zigzag signed integers, shared by the shard-link and client-link codecs.

/// Appends `v` as a LEB128 varint: 7 bits a byte, low bits first.
pub fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Maps signed to unsigned so small magnitudes of either sign get short varints.
pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VarintError {
    /// The buffer ends inside the varint.
    Truncated,
    /// Longer than 10 bytes, or more than 64 bits.
    Overflow,
}

/// Reads the varint at `*at` and moves `*at` past it.
pub fn read(buf: &[u8], at: &mut usize) -> Result<u64, VarintError> {
    let mut v: u64 = 0;
    for shift in (0..70).step_by(7) {
        let b = *buf.get(*at).ok_or(VarintError::Truncated)?;
        *at += 1;
        if shift == 63 && b > 1 {
            return Err(VarintError::Overflow);
        }
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(VarintError::Overflow)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_edges_and_refuses_overlong() {
        for v in [
            0,
            1,
            127,
            128,
            300,
            u64::from(u32::MAX),
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put(&mut out, v);
            let mut at = 0;
            assert_eq!(read(&out, &mut at), Ok(v));
            assert_eq!(at, out.len());
        }
        for v in [0, -1, 1, i64::MIN, i64::MAX] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
        assert_eq!(zigzag(-1), 1);
        assert_eq!(read(&[0x80], &mut 0), Err(VarintError::Truncated));
        assert_eq!(read(&[0xff; 10], &mut 0), Err(VarintError::Overflow));
        assert_eq!(
            read(
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
                &mut 0
            ),
            Err(VarintError::Overflow)
        );
    }
}
