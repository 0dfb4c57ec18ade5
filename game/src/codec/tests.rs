use super::*;
use proptest::prelude::*;

const HZ: u32 = 30;

fn entity(id: u64, pos: [f32; 2], vel: [f32; 2], angle: f32, spin: f32) -> SeenEntity {
    SeenEntity {
        id,
        kind: (id % 3) as u8,
        pos,
        vel,
        angle,
        spin,
    }
}

/// A small deterministic world: `n` bodies drifting and spinning, integrated in f32 as a
/// shard does.
fn drifting(n: u64) -> Vec<SeenEntity> {
    (0..n)
        .map(|i| {
            let f = i as f32;
            entity(
                1000 + i * 7,
                [f * 37.5 - 2000.0, 1500.0 - f * 11.25],
                [(f * 0.7).sin() * 120.0, (f * 1.3).cos() * 80.0],
                f * 0.4,
                ((f * 0.9).sin()) * 0.5,
            )
        })
        .collect()
}

fn step(world: &mut [SeenEntity]) {
    let dt = 1.0 / HZ as f32;
    for e in world {
        e.pos[0] += e.vel[0] * dt;
        e.pos[1] += e.vel[1] * dt;
        e.angle = (e.angle + e.spin * dt).rem_euclid(TAU);
    }
}

/// Every entity of `truth` is in `decoded`, with its kind, velocity and spin, and within the
/// tolerance of its position and heading; nothing else is.
fn assert_near(decoded: &Snapshot, truth: &Snapshot) {
    assert_eq!(decoded.tick, truth.tick);
    assert_eq!(
        decoded.entities.iter().map(|e| e.id).collect::<Vec<_>>(),
        truth.entities.iter().map(|e| e.id).collect::<Vec<_>>()
    );
    for (d, t) in decoded.entities.iter().zip(&truth.entities) {
        let seen = d.predicted(truth.tick, HZ);
        assert!(seen.near(t), "decoded {seen:?} is not near {t:?}");
    }
}

#[test]
fn a_whole_update_round_trips_exactly() {
    let snapshot = Snapshot::quantize(7, &drifting(50));
    let mut bytes = Vec::new();
    let decoded_by_encoder = encode(&snapshot, None, HZ, &mut bytes);
    assert_eq!(decoded_by_encoder, snapshot);
    assert_eq!(decode(&bytes, HZ, |_| None), Ok(snapshot.clone()));
    let back = snapshot.to_update(HZ);
    for (e, q) in back.entities.iter().zip(&snapshot.entities) {
        assert_eq!(
            QuantizedEntity::quantize(7, e),
            *q,
            "dequantizing loses nothing"
        );
    }
}

#[test]
fn quantization_is_within_half_a_step_and_wraps_headings() {
    let e = entity(1, [1234.5678, -0.03], [-99.99, 0.004], -0.001, 0.25);
    let back = QuantizedEntity::quantize(0, &e).dequantize();
    assert!((back.pos[0] - e.pos[0]).abs() <= 0.5 / POS_STEPS_PER_UNIT);
    assert!((back.pos[1] - e.pos[1]).abs() <= 0.5 / POS_STEPS_PER_UNIT);
    assert!((back.vel[0] - e.vel[0]).abs() <= 0.5 / VEL_STEPS_PER_UNIT);
    // -0.001 rad is just below a full turn.
    assert!((back.angle - (TAU - 0.001)).abs() < TAU / ANGLE_STEPS as f32);
    assert!((back.spin - 0.25).abs() < 0.001);
    // Across zero the heading residual is the short way round.
    assert_eq!(angle_residual(2, ANGLE_STEPS as u16 - 3), 5);
    assert_eq!(angle_residual(ANGLE_STEPS as u16 - 3, 2), -5);
    let nan = entity(
        2,
        [f32::NAN, f32::INFINITY],
        [f32::NEG_INFINITY, 1.0],
        f32::NAN,
        f32::NAN,
    );
    let q = QuantizedEntity::quantize(0, &nan);
    assert_eq!((q.pos, q.vel[0], q.angle, q.spin), ([0, 0], 0, 0, 0));
    let far = QuantizedEntity::quantize(0, &entity(3, [1e30, -1e30], [0.0; 2], 0.0, 0.0));
    assert_eq!(far.pos, [i32::MAX, i32::MIN], "saturates, never wraps");
}

#[test]
fn bodies_in_steady_motion_cost_nothing_once_acknowledged() {
    let mut world = drifting(200);
    let mut encoder = StateEncoder::new(HZ);
    let mut decoder = StateDecoder::new(HZ);
    let first = encoder.encode(1, &world);
    let tick = decoder.decode(&first).unwrap().unwrap().tick;
    encoder.acknowledge(tick);
    let mut delta_bytes = 0;
    for tick in 2..=91 {
        step(&mut world);
        let bytes = encoder.encode(tick, &world);
        delta_bytes += bytes.len();
        let decoded = decoder.decode(&bytes).unwrap().unwrap().clone();
        assert_near(&decoded, &Snapshot::quantize(tick, &world));
        encoder.acknowledge(tick);
    }
    let per_entity_update = delta_bytes as f64 / (90.0 * 200.0);
    println!(
        "whole: {} bytes for 200 bodies; steady: {per_entity_update:.3} bytes per entity update",
        first.len()
    );
    assert!(first.len() > 200 * 8, "a whole update carries every body");
    assert!(
        per_entity_update < 0.5,
        "{per_entity_update} bytes per entity update for bodies that only drift"
    );
}

#[test]
fn a_turn_costs_the_residuals_of_one_body_only() {
    let mut world = drifting(100);
    let mut encoder = StateEncoder::new(HZ);
    let mut decoder = StateDecoder::new(HZ);
    let whole = encoder.encode(1, &world);
    decoder.decode(&whole).unwrap();
    encoder.acknowledge(1);
    step(&mut world);
    world[40].vel = [300.0, -300.0];
    world[40].angle += 1.0;
    let bytes = encoder.encode(2, &world);
    let decoded = decoder.decode(&bytes).unwrap().unwrap().clone();
    assert_near(&decoded, &Snapshot::quantize(2, &world));
    assert_eq!(decoded.entities[40].vel, [300 * 64, -300 * 64]);
    assert!(
        bytes.len() < 20,
        "{} bytes for one changed body",
        bytes.len()
    );
}

#[test]
fn entities_entering_and_leaving_view_are_added_and_removed() {
    let world = drifting(20);
    let mut encoder = StateEncoder::new(HZ);
    let mut decoder = StateDecoder::new(HZ);
    decoder.decode(&encoder.encode(1, &world[..10])).unwrap();
    encoder.acknowledge(1);
    // 0-4 leave, 10-14 enter.
    let next = &world[5..15];
    let decoded = decoder
        .decode(&encoder.encode(2, next))
        .unwrap()
        .unwrap()
        .clone();
    assert_near(&decoded, &Snapshot::quantize(2, next));
    // And all leave.
    let decoded = decoder
        .decode(&encoder.encode(3, &[]))
        .unwrap()
        .unwrap()
        .clone();
    assert!(decoded.entities.is_empty());
}

#[test]
fn without_acknowledgements_updates_are_whole_and_a_late_one_is_ignored() {
    let world = drifting(30);
    let mut encoder = StateEncoder::new(HZ);
    let mut decoder = StateDecoder::new(HZ);
    let one = encoder.encode(1, &world);
    let two = encoder.encode(2, &world);
    assert_eq!(one.len(), two.len(), "nothing acknowledged: both whole");
    decoder.decode(&two).unwrap().unwrap();
    assert_eq!(
        decoder.decode(&one),
        Ok(None),
        "older than the newest decoded"
    );
    // An acknowledgement of a tick never sent changes nothing.
    encoder.acknowledge(99);
    assert_eq!(encoder.encode(3, &world).len(), one.len());
}

#[test]
fn an_acknowledgement_older_than_the_history_falls_back_to_whole_updates() {
    let world = drifting(30);
    let mut encoder = StateEncoder::new(HZ);
    let whole = encoder.encode(1, &world).len();
    encoder.acknowledge(1);
    assert!(encoder.encode(2, &world).len() < whole);
    for tick in 3..(3 + HISTORY as u64) {
        encoder.encode(tick, &world);
    }
    // Tick 1 has left the history: the client would not find it either.
    assert_eq!(encoder.encode(3 + HISTORY as u64, &world).len(), whole);
}

#[test]
fn malformed_updates_are_refused_without_panicking() {
    let world = drifting(40);
    let mut encoder = StateEncoder::new(HZ);
    let whole = encoder.encode(5, &world);
    encoder.acknowledge(5);
    let mut moved = world.clone();
    step(&mut moved);
    moved[3].vel = [1.0, 1.0];
    let delta = encoder.encode(6, &moved[1..]);
    let base = decode(&whole, HZ, |_| None).unwrap();
    let held = |t: u64| (t == 5).then_some(&base);
    decode(&delta, HZ, held).expect("the intact delta decodes");

    for cut in 0..delta.len() {
        assert!(decode(&delta[..cut], HZ, held).is_err(), "cut at {cut}");
    }
    for cut in 0..whole.len() {
        assert!(decode(&whole[..cut], HZ, |_| None).is_err(), "cut at {cut}");
    }
    let mut long = delta.clone();
    long.push(0);
    assert_eq!(decode(&long, HZ, held), Err(CodecError::TrailingBytes(1)));
    assert_eq!(
        decode(&delta, HZ, |_| None),
        Err(CodecError::MissingBaseline(5))
    );
    // tick 1, age 2: a baseline before tick 0.
    assert!(matches!(
        decode(&[1, 2, 0, 0], HZ, |_| None),
        Err(CodecError::BadBaselineAge { .. })
    ));
    // A forged count is refused before anything is allocated for it.
    let mut forged = Vec::new();
    put_varint(&mut forged, 1);
    put_varint(&mut forged, 0);
    put_varint(&mut forged, 0);
    put_varint(&mut forged, u64::MAX);
    assert_eq!(
        decode(&forged, HZ, |_| None),
        Err(CodecError::TooMany(u64::MAX))
    );
    // A change to an entity the baseline does not have.
    let mut stray = Vec::new();
    for v in [6, 1, 0, 1, 999_999, u64::from(FIELD_PX), 2] {
        put_varint(&mut stray, v);
    }
    assert_eq!(
        decode(&stray, HZ, held),
        Err(CodecError::NotInBaseline(999_999))
    );
    // Unknown mask bits, repeated ids.
    assert_eq!(
        decode(&[1, 0, 0, 1, 7, 0x80], HZ, |_| None),
        Err(CodecError::BadMask(0x80))
    );
    assert_eq!(
        decode(
            &[1, 0, 0, 2, 7, NEW_ENTITY, 0, 0, NEW_ENTITY, 0],
            HZ,
            |_| None
        ),
        Err(CodecError::Unordered)
    );
}

fn body() -> impl Strategy<Value = SeenEntity> {
    (
        0u64..400,
        -5e4f32..5e4,
        -5e4f32..5e4,
        -400f32..400.0,
        -400f32..400.0,
        -10f32..10.0,
        -3f32..3.0,
    )
        .prop_map(|(id, x, y, vx, vy, a, w)| entity(id, [x, y], [vx, vy], a, w))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A lossy link: updates and acknowledgements lost at random, bodies thrusting, entering
    /// and leaving view. Every update that arrives decodes, to the truth within the tolerance.
    #[test]
    fn a_lossy_stream_always_decodes_near_the_truth(
        start in prop::collection::vec(body(), 0..120),
        events in prop::collection::vec((any::<bool>(), any::<bool>(), 0usize..200, -50f32..50.0, 0usize..4), 1..60),
    ) {
        let mut world = start;
        let mut encoder = StateEncoder::new(HZ);
        let mut decoder = StateDecoder::new(HZ);
        for (tick, (lost, ack_lost, who, push, view_change)) in events.into_iter().enumerate() {
            let tick = tick as u64 + 1;
            step(&mut world);
            if let Some(e) = world.get_mut(who) {
                e.vel[0] += push;
                e.spin = -e.spin;
            }
            // Some bodies leave view, some come back.
            let seen: Vec<SeenEntity> = world
                .iter()
                .filter(|e| (e.id as usize + tick as usize) % 7 != view_change)
                .copied()
                .collect();
            let bytes = encoder.encode(tick, &seen);
            if lost {
                continue;
            }
            let decoded = decoder.decode(&bytes).expect("an update that arrives decodes");
            let decoded = decoded.expect("ticks only increase").clone();
            assert_near(&decoded, &Snapshot::quantize(tick, &seen));
            if !ack_lost {
                encoder.acknowledge(tick);
            }
        }
    }

    #[test]
    fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let base = Snapshot::quantize(3, &drifting(10));
        let _ = decode(&bytes, HZ, |t| (t == 3).then_some(&base));
    }
}

#[test]
fn a_view_with_a_repeated_id_keeps_its_first_entry() {
    let a = entity(7, [1.0, 2.0], [0.0; 2], 0.0, 0.0);
    let b = entity(7, [50.0, 60.0], [0.0; 2], 0.0, 0.0);
    let c = entity(3, [5.0, 6.0], [0.0; 2], 0.0, 0.0);
    let s = Snapshot::quantize(1, &[a, c, b]);
    assert_eq!(
        s.entities.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![3, 7]
    );
    assert_eq!(s.entities[1].pos, QuantizedEntity::quantize(1, &a).pos);
}

/// A server that quantizes each entity once per tick and hands a player its view in id order
/// sends the very bytes the per-player path sends, update after update.
#[test]
fn an_already_quantized_view_encodes_to_the_same_bytes() {
    let mut world = drifting(80);
    let (mut per_player, mut prequantized) = (StateEncoder::new(HZ), StateEncoder::new(HZ));
    for tick in 1..=20u64 {
        step(&mut world);
        // The per-player path takes the view in any order.
        let mut shuffled = world.clone();
        shuffled.reverse();
        let a = per_player.encode(tick, &shuffled);
        let b = prequantized.encode_snapshot(Snapshot::quantize(tick, &world));
        assert_eq!(a, b, "tick {tick}");
        if tick > 2 {
            per_player.acknowledge(tick - 2);
            prequantized.acknowledge(tick - 2);
        }
    }
}
