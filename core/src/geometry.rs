//! The sector quadtree.
//!
//! A sector `(scale, x, y)` covers `[x * E, (x + 1) * E)` on each axis, with edge
//! `E = BASE_EDGE * 2^scale`. Scale 0 is the smallest; children halve the edge. The world is
//! finite only so that every id fits exactly in an `f64` world coordinate: it spans
//! `±BASE_EDGE * 2^MAX_SCALE` (about 1.1e15 units) on each axis, which no game will reach.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Edge of a scale-0 sector, in world units.
pub const BASE_EDGE: f64 = 1000.0;
/// Largest scale. At this scale the world is four sectors: x and y in {-1, 0}.
pub const MAX_SCALE: u8 = 40;

/// A point in world units.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub x: f64,
    pub y: f64,
}

impl Point {
    pub const fn new(x: f64, y: f64) -> Self {
        Self { x, y }
    }
}

/// Half-open axis-aligned box `[min, max)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bounds {
    pub min: Point,
    pub max: Point,
}

impl Bounds {
    pub fn contains(&self, p: Point) -> bool {
        p.x >= self.min.x && p.x < self.max.x && p.y >= self.min.y && p.y < self.max.y
    }

    pub fn edge(&self) -> f64 {
        self.max.x - self.min.x
    }

    /// This box with `margin` added on every side.
    pub fn grown(&self, margin: f64) -> Bounds {
        Bounds {
            min: Point::new(self.min.x - margin, self.min.y - margin),
            max: Point::new(self.max.x + margin, self.max.y + margin),
        }
    }

    /// Distance from `p` to the box (0 inside), used for border margins.
    pub fn distance_to(&self, p: Point) -> f64 {
        let dx = (self.min.x - p.x).max(p.x - self.max.x).max(0.0);
        let dy = (self.min.y - p.y).max(p.y - self.max.y).max(0.0);
        dx.hypot(dy)
    }
}

/// Why a sector id or point is not in the world.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SectorIdError {
    #[error("scale {scale} is above the maximum scale {MAX_SCALE}")]
    ScaleTooLarge { scale: u8 },
    #[error(
        "coordinates ({x}, {y}) are outside the world at scale {scale}: each must be in [-{limit}, {limit})"
    )]
    OutOfRange {
        scale: u8,
        x: i64,
        y: i64,
        limit: i64,
    },
    #[error("point ({x}, {y}) is not finite")]
    NotFinite { x: f64, y: f64 },
    #[error("point ({x}, {y}) is outside the world (|coordinate| must be below {WORLD_HALF_SPAN})")]
    PointOutsideWorld { x: f64, y: f64 },
}

// Display of the constant in error messages.
const WORLD_HALF_SPAN: f64 = BASE_EDGE * (1u64 << MAX_SCALE) as f64;

/// Why a string is not a canonical sector name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid sector name {input:?}: {reason} (expected e.g. \"s3-x0-ym2\": s<scale>-x<n>-y<n>, negatives written m<n>)"
)]
pub struct ParseSectorIdError {
    pub input: String,
    pub reason: String,
}

/// Number of sectors from the origin to the world edge along an axis at `scale`
/// (valid coordinates are `-limit..limit`).
pub const fn coordinate_limit(scale: u8) -> i64 {
    1i64 << (MAX_SCALE - scale)
}

/// One node of the world quadtree. Serialised as its canonical name (`"s3-x0-ym2"`), so it
/// can key JSON maps and is validated on the way in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct SectorId {
    pub scale: u8,
    pub x: i64,
    pub y: i64,
}

impl SectorId {
    /// A checked constructor: the only way callers should build ids from untrusted numbers.
    pub fn new(scale: u8, x: i64, y: i64) -> Result<Self, SectorIdError> {
        if scale > MAX_SCALE {
            return Err(SectorIdError::ScaleTooLarge { scale });
        }
        let limit = coordinate_limit(scale);
        if !(-limit..limit).contains(&x) || !(-limit..limit).contains(&y) {
            return Err(SectorIdError::OutOfRange { scale, x, y, limit });
        }
        Ok(Self { scale, x, y })
    }

    /// Whether the fields (which are public for plain-data use) describe a sector in the world.
    pub fn is_valid(&self) -> bool {
        Self::new(self.scale, self.x, self.y).is_ok()
    }

    /// Edge length in world units.
    pub fn edge(&self) -> f64 {
        BASE_EDGE * 2f64.powi(i32::from(self.scale))
    }

    pub fn bounds(&self) -> Bounds {
        let e = self.edge();
        // Exact: |x| * e <= 2^40 * 1000 * 2^0 .. all integers below 2^53.
        let min = Point::new(self.x as f64 * e, self.y as f64 * e);
        Bounds {
            min,
            max: Point::new(min.x + e, min.y + e),
        }
    }

    pub fn center(&self) -> Point {
        let b = self.bounds();
        Point::new((b.min.x + b.max.x) / 2.0, (b.min.y + b.max.y) / 2.0)
    }

    pub fn contains(&self, p: Point) -> bool {
        self.bounds().contains(p)
    }

    /// Whether `other` is this sector or lies inside it.
    pub fn covers(&self, other: &SectorId) -> bool {
        if other.scale > self.scale {
            return false;
        }
        let shift = self.scale - other.scale;
        other.x >> shift == self.x && other.y >> shift == self.y
    }

    /// The sector at `scale` that contains `p`.
    pub fn of_point(p: Point, scale: u8) -> Result<Self, SectorIdError> {
        if !p.x.is_finite() || !p.y.is_finite() {
            return Err(SectorIdError::NotFinite { x: p.x, y: p.y });
        }
        if scale > MAX_SCALE {
            return Err(SectorIdError::ScaleTooLarge { scale });
        }
        if p.x < -WORLD_HALF_SPAN
            || p.x >= WORLD_HALF_SPAN
            || p.y < -WORLD_HALF_SPAN
            || p.y >= WORLD_HALF_SPAN
        {
            return Err(SectorIdError::PointOutsideWorld { x: p.x, y: p.y });
        }
        let e = BASE_EDGE * (1u64 << scale) as f64;
        Self::new(scale, (p.x / e).floor() as i64, (p.y / e).floor() as i64)
    }

    /// The four children in the order (0,0), (1,0), (0,1), (1,1); `None` at scale 0.
    pub fn children(&self) -> Option<[SectorId; 4]> {
        if self.scale == 0 {
            return None;
        }
        let s = self.scale - 1;
        let (x, y) = (self.x * 2, self.y * 2);
        Some([
            SectorId { scale: s, x, y },
            SectorId {
                scale: s,
                x: x + 1,
                y,
            },
            SectorId {
                scale: s,
                x,
                y: y + 1,
            },
            SectorId {
                scale: s,
                x: x + 1,
                y: y + 1,
            },
        ])
    }

    /// The enclosing sector one scale up; `None` at the maximum scale.
    pub fn parent(&self) -> Option<SectorId> {
        if self.scale >= MAX_SCALE {
            return None;
        }
        Some(SectorId {
            scale: self.scale + 1,
            x: self.x.div_euclid(2),
            y: self.y.div_euclid(2),
        })
    }

    /// The up to eight same-scale sectors sharing an edge or corner, skipping the world's edge.
    pub fn neighbours(&self) -> Vec<SectorId> {
        let mut out = Vec::with_capacity(8);
        for dy in -1..=1i64 {
            for dx in -1..=1i64 {
                if dx == 0 && dy == 0 {
                    continue;
                }
                if let Ok(n) = SectorId::new(
                    self.scale,
                    self.x.saturating_add(dx),
                    self.y.saturating_add(dy),
                ) {
                    out.push(n);
                }
            }
        }
        out
    }

    /// Canonical DNS-safe name, e.g. `s3-x0-ym2` (negative numbers are written `m<abs>`).
    pub fn name(&self) -> String {
        self.to_string()
    }

    pub fn parse_name(s: &str) -> Result<Self, ParseSectorIdError> {
        s.parse()
    }
}

fn write_coord(f: &mut fmt::Formatter<'_>, v: i64) -> fmt::Result {
    if v < 0 {
        write!(f, "m{}", v.unsigned_abs())
    } else {
        write!(f, "{v}")
    }
}

impl fmt::Display for SectorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}-x", self.scale)?;
        write_coord(f, self.x)?;
        f.write_str("-y")?;
        write_coord(f, self.y)
    }
}

/// Parses canonical decimal digits: no sign, no leading zeros, fits in u64.
fn parse_digits(s: &str) -> Result<u64, String> {
    if s.is_empty() {
        return Err("missing number".into());
    }
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{s:?} is not a decimal number"));
    }
    if s.len() > 1 && s.starts_with('0') {
        return Err(format!("{s:?} has a leading zero"));
    }
    s.parse::<u64>().map_err(|_| format!("{s:?} is too large"))
}

fn parse_coord(s: &str) -> Result<i64, String> {
    match s.strip_prefix('m') {
        Some(rest) => {
            let v = parse_digits(rest)?;
            if v == 0 {
                return Err("negative zero \"m0\" is not canonical".into());
            }
            i64::try_from(v)
                .map(|v| -v)
                .map_err(|_| format!("{s:?} is too large"))
        }
        None => i64::try_from(parse_digits(s)?).map_err(|_| format!("{s:?} is too large")),
    }
}

impl From<SectorId> for String {
    fn from(s: SectorId) -> String {
        s.to_string()
    }
}

impl TryFrom<String> for SectorId {
    type Error = ParseSectorIdError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl FromStr for SectorId {
    type Err = ParseSectorIdError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |reason: String| ParseSectorIdError {
            input: input.to_owned(),
            reason,
        };
        let mut parts = input.split('-');
        let (Some(s), Some(x), Some(y), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(err("expected three parts separated by '-'".into()));
        };
        let scale = s
            .strip_prefix('s')
            .ok_or_else(|| err("scale must start with 's'".into()))?;
        let x = x
            .strip_prefix('x')
            .ok_or_else(|| err("x must start with 'x'".into()))?;
        let y = y
            .strip_prefix('y')
            .ok_or_else(|| err("y must start with 'y'".into()))?;
        let scale = parse_digits(scale).map_err(|r| err(format!("scale: {r}")))?;
        let scale =
            u8::try_from(scale).map_err(|_| err(format!("scale {scale} is above {MAX_SCALE}")))?;
        let x = parse_coord(x).map_err(|r| err(format!("x: {r}")))?;
        let y = parse_coord(y).map_err(|r| err(format!("y: {r}")))?;
        SectorId::new(scale, x, y).map_err(|e| err(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_sector() -> impl Strategy<Value = SectorId> {
        (0..=MAX_SCALE).prop_flat_map(|s| {
            let l = coordinate_limit(s);
            (Just(s), -l..l, -l..l).prop_map(|(scale, x, y)| SectorId { scale, x, y })
        })
    }

    fn any_parent() -> impl Strategy<Value = SectorId> {
        any_sector().prop_filter("has children", |s| s.scale > 0)
    }

    #[test]
    fn names_are_canonical_and_dns_safe() {
        let s = SectorId::new(3, 0, -2).unwrap();
        assert_eq!(s.name(), "s3-x0-ym2");
        assert_eq!("s3-x0-ym2".parse::<SectorId>().unwrap(), s);
        let extreme = SectorId::new(0, -coordinate_limit(0), coordinate_limit(0) - 1).unwrap();
        assert!(extreme.name().len() <= 63);
    }

    #[test]
    fn parser_rejects_non_canonical_names() {
        for bad in [
            "",
            "s3",
            "s3-x0",
            "s3-x0-y0-",
            "s3-x0-y0-z",
            "S3-x0-y0",
            "s3-x-1-y0",
            "s3-x01-y0",
            "s3-xm0-y0",
            "s03-x0-y0",
            "s3-x+1-y0",
            "s41-x0-y0",
            "s256-x0-y0",
            "s40-x1-y0",
            "s0-x99999999999999999999-y0",
            "s3-x0-y 0",
            "s3_x0_y0",
            "s3-xmm1-y0",
            "s3-y0-x0",
        ] {
            let e = bad.parse::<SectorId>().expect_err(bad);
            assert!(e.to_string().contains("invalid sector name"), "{e}");
        }
    }

    #[test]
    fn of_point_rejects_nan_and_far_points() {
        assert!(matches!(
            SectorId::of_point(Point::new(f64::NAN, 0.0), 0),
            Err(SectorIdError::NotFinite { .. })
        ));
        assert!(matches!(
            SectorId::of_point(Point::new(0.0, f64::INFINITY), 0),
            Err(SectorIdError::NotFinite { .. })
        ));
        assert!(matches!(
            SectorId::of_point(Point::new(1e300, 0.0), 0),
            Err(SectorIdError::PointOutsideWorld { .. })
        ));
        assert_eq!(
            SectorId::of_point(Point::new(-0.5, 999.9), 0).unwrap(),
            SectorId {
                scale: 0,
                x: -1,
                y: 0
            }
        );
        assert_eq!(
            SectorId::of_point(Point::new(1000.0, -1000.0), 0).unwrap(),
            SectorId {
                scale: 0,
                x: 1,
                y: -1
            }
        );
    }

    #[test]
    fn world_edges_have_no_parent_children_or_outer_neighbours() {
        let top = SectorId::new(MAX_SCALE, -1, 0).unwrap();
        assert_eq!(top.parent(), None);
        assert_eq!(top.neighbours().len(), 3);
        assert_eq!(SectorId::new(0, 5, 5).unwrap().children(), None);
        assert_eq!(SectorId::new(2, 0, 0).unwrap().neighbours().len(), 8);
        assert!(SectorId::new(MAX_SCALE + 1, 0, 0).is_err());
        assert!(SectorId::new(0, i64::MIN, 0).is_err());
        assert!(SectorId::new(0, 0, i64::MAX).is_err());
    }

    proptest! {
        #[test]
        fn children_tile_the_parent_exactly(p in any_parent()) {
            let b = p.bounds();
            let kids = p.children().unwrap();
            let area: f64 = kids.iter().map(|k| k.edge() * k.edge()).sum();
            prop_assert_eq!(area, b.edge() * b.edge());
            for k in kids {
                prop_assert!(k.is_valid());
                prop_assert_eq!(k.parent(), Some(p));
                prop_assert!(p.covers(&k));
                let kb = k.bounds();
                prop_assert!(kb.min.x >= b.min.x && kb.max.x <= b.max.x);
                prop_assert!(kb.min.y >= b.min.y && kb.max.y <= b.max.y);
            }
            // Pairwise disjoint: distinct (x, y) at equal scale never overlap.
            for i in 0..4 { for j in i + 1..4 { prop_assert_ne!((kids[i].x, kids[i].y), (kids[j].x, kids[j].y)); } }
        }

        #[test]
        fn every_point_lies_in_exactly_one_child(p in any_parent(), fx in 0.0f64..1.0, fy in 0.0f64..1.0) {
            let b = p.bounds();
            let pt = Point::new(b.min.x + fx * b.edge(), b.min.y + fy * b.edge());
            prop_assume!(b.contains(pt));
            let inside = p.children().unwrap().iter().filter(|k| k.contains(pt)).count();
            prop_assert_eq!(inside, 1);
            let child = SectorId::of_point(pt, p.scale - 1).unwrap();
            prop_assert!(child.contains(pt));
            prop_assert_eq!(child.parent(), Some(p));
        }

        #[test]
        fn names_round_trip(s in any_sector()) {
            let name = s.name();
            prop_assert!(name.len() <= 63);
            prop_assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
            prop_assert_eq!(name.parse::<SectorId>().unwrap(), s);
        }

        #[test]
        fn parent_of_child_is_self(p in any_parent()) {
            for k in p.children().unwrap() { prop_assert_eq!(k.parent().unwrap(), p); }
        }

        #[test]
        fn parent_covers_self(s in any_sector()) {
            if let Some(p) = s.parent() {
                prop_assert!(p.is_valid());
                prop_assert!(p.covers(&s));
                prop_assert!(p.children().unwrap().contains(&s));
            }
        }

        #[test]
        fn extreme_ids_never_panic(scale in any::<u8>(), x in any::<i64>(), y in any::<i64>(), px in any::<f64>(), py in any::<f64>()) {
            match SectorId::new(scale, x, y) {
                Ok(s) => {
                    let _ = (s.bounds(), s.children(), s.parent(), s.neighbours(), s.name());
                    prop_assert!(s.contains(s.center()));
                }
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
            let _ = SectorId::of_point(Point::new(px, py), scale);
            let _ = SectorId { scale: scale.min(MAX_SCALE), x, y }.name().parse::<SectorId>();
        }

        #[test]
        fn arbitrary_strings_never_panic(s in ".{0,40}") {
            let _ = s.parse::<SectorId>();
        }

        #[test]
        fn neighbours_are_adjacent(s in any_sector()) {
            for n in s.neighbours() {
                prop_assert!(n.is_valid());
                prop_assert!((n.x - s.x).abs() <= 1 && (n.y - s.y).abs() <= 1 && n != s);
            }
        }
    }
}
