//! The `Sector` resource: one node of the world quadtree.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::core::Rule;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sidereal_core::geometry::{MAX_SCALE, coordinate_limit};

/// A square region of the world. Field names are chosen so that no key or value a user writes
/// needs quoting: YAML 1.1 readers (kubectl among them) take a bare `y` key for `true`.
/// Users apply root sectors; the operator creates children on a
/// split (owned by the parent, so deleting a parent cascades) and deletes them on a merge.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[kube(
    group = "sidereal.dev",
    version = "v1alpha1",
    kind = "Sector",
    namespaced,
    status = "SectorStatus",
    derive = "PartialEq",
    shortname = "sec",
    category = "sidereal",
    doc = "A square sector of the world, simulated by one shard while it is a leaf.",
    printcolumn(name = "Scale", type_ = "integer", json_path = ".spec.scale"),
    printcolumn(name = "Grid X", type_ = "integer", json_path = ".spec.gridX"),
    printcolumn(name = "Grid Y", type_ = "integer", json_path = ".spec.gridY"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Shard", type_ = "string", json_path = ".status.shard"),
    printcolumn(name = "Entities", type_ = "integer", json_path = ".status.load.entities"),
    printcolumn(name = "Players", type_ = "integer", json_path = ".status.load.players"),
    printcolumn(name = "Tick p99", type_ = "number", json_path = ".status.load.tickP99Ms", description = "shard tick time p99 in milliseconds"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = name_matches_coordinates_rule(),
)]
#[x_kube(validation = coordinates_in_world_rule())]
#[serde(rename_all = "camelCase")]
pub struct SectorSpec {
    /// Name of the ShardPool (in the same namespace) whose shards simulate this sector.
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("pool must be the name of a ShardPool: a DNS-1123 label (lowercase letters, digits and '-')"))]
    #[schemars(length(min = 1, max = 63))]
    pub pool: String,
    /// Quadtree level: the sector's edge is 1000 * 2^scale world units. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("scale is immutable"))]
    #[schemars(range(min = 0, max = 40))]
    pub scale: i32,
    /// Column (the x of the canonical name) at this scale; negative is west of the origin.
    /// Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("gridX is immutable"))]
    #[schemars(range(min = -1099511627776i64, max = 1099511627775i64))]
    pub grid_x: i64,
    /// Row (the y of the canonical name) at this scale; negative is south of the origin.
    /// Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("gridY is immutable"))]
    #[schemars(range(min = -1099511627776i64, max = 1099511627775i64))]
    pub grid_y: i64,
}

/// Lifecycle of a sector as the operator drives it.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SectorPhase {
    /// Not yet placed on a shard.
    #[default]
    Pending,
    /// A leaf simulated by `status.shard`.
    Active,
    /// Children are being created and entities handed over to them.
    Splitting,
    /// An inner node: its four children are the leaves.
    Split,
    /// Children are being folded back into this sector.
    Merging,
}

/// Load last reported for a leaf (by its shard, through replication).
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SectorLoad {
    pub entities: i64,
    pub players: i64,
    /// Tick time p99 of the shard simulating the sector, in milliseconds.
    pub tick_p99_ms: f64,
}

#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SectorStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<SectorPhase>,
    /// Shard simulating this sector while it is an active leaf.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<SectorLoad>,
    /// Names of the four children while split.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// CEL for "gridX and gridY lie inside the world at `self.scale`". `limits[s]` is
/// `coordinate_limit(s)`, written out because CEL has no shifts or powers; `-v - 1` maps the
/// negative half onto the positive one so the limit is compared once.
fn coordinates_in_world_rule() -> Rule {
    let limits: Vec<String> = (0..=MAX_SCALE)
        .map(|s| coordinate_limit(s).to_string())
        .collect();
    let fold = |f: &str| format!("(self.{f} >= 0 ? self.{f} : -self.{f} - 1)");
    Rule::new(format!(
        "[{}][self.scale] > ({x} > {y} ? {x} : {y})",
        limits.join(", "),
        x = fold("gridX"),
        y = fold("gridY")
    ))
    .message(
        "gridX and gridY must lie inside the world at this scale: -2^(40-scale) <= gridX, gridY < 2^(40-scale)",
    )
    .reason(kube::core::Reason::FieldValueInvalid)
}

/// CEL for "metadata.name is the canonical name of (scale, x, y)", mirroring
/// `sidereal_core::SectorId`'s Display. The name is parsed rather than built from the spec:
/// the API server prices `string(int)` concatenation far above its rule budget.
fn name_matches_coordinates_rule() -> Rule {
    let part = |i: usize| format!("self.metadata.name.split('-')[{i}].substring(1)");
    Rule::new(format!(
        "self.metadata.name.matches('^s(0|[1-9][0-9]?)-x(0|m?[1-9][0-9]{{0,12}})-y(0|m?[1-9][0-9]{{0,12}})$') \
         && int({s}) == self.spec.scale \
         && int({x}.replace('m', '-')) == self.spec.gridX \
         && int({y}.replace('m', '-')) == self.spec.gridY",
        s = part(0),
        x = part(1),
        y = part(2),
    ))
    .message("metadata.name must be the sector's canonical name s<scale>-x<x>-y<y> with negatives written m<n>, e.g. s3-xm1-y2 for scale 3, gridX -1, gridY 2")
}

impl Sector {
    /// A sector named canonically after its coordinates.
    pub fn for_id(pool: &str, id: sidereal_core::SectorId) -> Self {
        Sector::new(
            &id.name(),
            SectorSpec {
                pool: pool.to_owned(),
                scale: i32::from(id.scale),
                grid_x: id.x,
                grid_y: id.y,
            },
        )
    }

    /// The geometric id, if the spec describes a sector inside the world.
    pub fn sector_id(&self) -> Result<sidereal_core::SectorId, sidereal_core::SectorIdError> {
        let scale = u8::try_from(self.spec.scale)
            .map_err(|_| sidereal_core::SectorIdError::ScaleTooLarge { scale: u8::MAX })?;
        sidereal_core::SectorId::new(scale, self.spec.grid_x, self.spec.grid_y)
    }
}

/// The Sector CRD. The derived one is completed with `metadata.name`'s maximum length: the API
/// server estimates the cost of the name rule from it, and rejects the CRD without a bound.
pub fn crd()
-> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaProps;
    use kube::CustomResourceExt;
    let mut crd = Sector::crd();
    for version in &mut crd.spec.versions {
        let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        else {
            continue;
        };
        let name = JSONSchemaProps {
            type_: Some("string".into()),
            max_length: Some(63),
            ..Default::default()
        };
        let metadata = JSONSchemaProps {
            type_: Some("object".into()),
            properties: Some([("name".to_owned(), name)].into()),
            ..Default::default()
        };
        schema
            .properties
            .get_or_insert_with(Default::default)
            .insert("metadata".into(), metadata);
    }
    crd
}
