//! Benchmarks of the simulation and the shard link. They print numbers; they do not fail.
//!   cargo bench -p sidereal-replication --bench fleet

use std::time::{Duration, Instant};

use sidereal_core::codec::UpdateEncoder;
use sidereal_core::protocol::ShardMessage;
use sidereal_core::{
    EntityId, EntityKind, EntitySnapshot, EntityState, Placement, SectorId, ShardId,
};
use sidereal_replication::{Authority, AuthorityConfig};
use sidereal_shard::load::thread_cpu_time;
use sidereal_testkit::fleet::Fleet;

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1]
}

/// Wall and CPU time of one call, in milliseconds.
fn timed(f: impl FnOnce()) -> (f64, f64) {
    let (t, c) = (Instant::now(), thread_cpu_time());
    f();
    (
        t.elapsed().as_secs_f64() * 1000.0,
        (thread_cpu_time() - c).as_secs_f64() * 1000.0,
    )
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// One shard simulating `n` bodies in one 8000 x 8000 sector, ships firing every 90 ticks, after
/// 30 warm-up ticks: the scene the tick benchmarks measure.
fn one_shard_after_warm_up(n: usize) -> Fleet {
    let world = vec![SectorId::new(3, 0, 0).unwrap()];
    let mut f = Fleet::new(world.clone(), 1, 90);
    f.seed(n, 5);
    let mut p = Placement {
        generation: 1,
        sectors: Default::default(),
        world: None,
    };
    p.sectors.insert(world[0], ShardId::new("shard-0"));
    f.place(p);
    for _ in 0..30 {
        f.step();
    }
    f
}

/// One shard simulating N bodies in one big sector, ships firing as in a live shard: the
/// whole `App::update` of a tick, wall and CPU time.
fn shard_tick_cost() {
    println!("## shard tick cost (one shard, one core, avian2d, release, projectiles on)");
    println!("| bodies | wall mean ms | wall p99 ms | CPU mean ms | CPU p99 ms |");
    println!("|---|---|---|---|---|");
    for n in [1_000, 5_000, 10_000, 20_000, 30_000, 40_000] {
        let mut f = one_shard_after_warm_up(n);
        let (mut wall, mut cpu) = (Vec::new(), Vec::new());
        for _ in 0..300 {
            let (w, c) = timed(|| f.shards[0].as_mut().unwrap().app.update());
            wall.push(w);
            cpu.push(c);
            f.step_replication_only();
        }
        println!(
            "| {n} | {:.2} | {:.2} | {:.2} | {:.2} |",
            mean(&wall),
            percentile(&mut wall, 0.99),
            mean(&cpu),
            percentile(&mut cpu, 0.99)
        );
    }
}

/// The physics engine alone on the shard's scene: the very bodies (positions, velocities,
/// colliders) of a shard after its warm-up, stepped by a bare Bevy app with avian2d configured
/// as the shard configures it (no gravity, no interpolation, the same fixed tick), and nothing
/// of ours. Printed beside the shard's own tick on the same scene, with the ratio: what a shard
/// adds to physics.
fn bare_physics_beside_the_shard() {
    println!("\n## the shard's tick beside bare avian2d on the same bodies (release, one core)");
    println!("| bodies | shard mean / p99 ms | bare avian2d mean / p99 ms | shard / bare (mean) |");
    println!("|---|---|---|---|");
    for n in [1_000, 5_000, 10_000, 20_000] {
        let mut f = one_shard_after_warm_up(n);
        let mut bare = bare_physics_of(&mut f, Default::default());
        let bodies = bare
            .world_mut()
            .query::<&avian2d::prelude::RigidBody>()
            .iter(bare.world())
            .count();
        // The same 300 ticks for both: the shard with replication stepping beside it, as in
        // `shard_tick_cost`.
        let (mut bare_cpu, mut shard_cpu) = (Vec::new(), Vec::new());
        for _ in 0..300 {
            bare_cpu.push(timed(|| bare.update()).1);
            shard_cpu.push(timed(|| f.shards[0].as_mut().unwrap().app.update()).1);
            f.step_replication_only();
        }
        let (bare_mean, shard_mean) = (mean(&bare_cpu), mean(&shard_cpu));
        let (bare_p99, shard_p99) = (
            percentile(&mut bare_cpu, 0.99),
            percentile(&mut shard_cpu, 0.99),
        );
        println!(
            "| {bodies} | {shard_mean:.2} / {shard_p99:.2} | {bare_mean:.2} / {bare_p99:.2} | {:.2} |",
            shard_mean / bare_mean
        );
    }
}

/// A bare Bevy app with the shard's physics plugin (avian2d as a shard configures it) and
/// nothing else of ours, holding the very bodies (positions, velocities, colliders) of the
/// fleet's first shard, warmed up as long.
fn bare_physics_of(
    f: &mut Fleet,
    settings: sidereal_shard::physics::PhysicsSettings,
) -> bevy::prelude::App {
    use avian2d::prelude::*;
    use bevy::prelude::*;
    use sidereal_shard::components::{Owned, body, state_of};
    use sidereal_shard::physics::stepped_physics_app;

    let shard_app = &mut f.shards[0].as_mut().unwrap().app;
    let bodies: Vec<(EntityKind, EntityState)> = shard_app
        .world_mut()
        .query::<(
            &Owned,
            &Position,
            &Rotation,
            &LinearVelocity,
            &AngularVelocity,
        )>()
        .iter(shard_app.world())
        .map(|(o, p, r, v, w)| (o.kind, state_of(p, r, v, w)))
        .collect();
    let mut bare = stepped_physics_app(Duration::from_secs_f64(1.0 / 30.0), settings);
    for (kind, state) in &bodies {
        bare.world_mut().spawn(body(*kind, state));
    }
    for _ in 0..30 {
        bare.update();
    }
    bare
}

/// What each physics setting is worth: bare avian2d on a shard's bodies (after its warm-up)
/// with the shard's settings, avian's defaults, and one setting changed at a time. CPU time of
/// `App::update`, 30 warm-up ticks then 150 measured.
fn physics_settings() {
    use avian2d::collider_tree::TreeOptimizationMode;
    use sidereal_shard::physics::PhysicsSettings;

    println!(
        "\n## bare avian2d on a shard's bodies, by setting (release, one core, CPU ms per tick)"
    );
    let shard = PhysicsSettings::default;
    let variants: Vec<(&str, PhysicsSettings)> = vec![
        ("the shard's settings", shard()),
        (
            "avian's defaults (length unit 1, 6 substeps, sleeping, Transform sync, tree copied on async tasks)",
            PhysicsSettings::avian_defaults(),
        ),
        (
            "length unit 1",
            PhysicsSettings {
                length_unit: 1.0,
                ..shard()
            },
        ),
        (
            "length unit 20",
            PhysicsSettings {
                length_unit: 20.0,
                ..shard()
            },
        ),
        (
            "6 substeps",
            PhysicsSettings {
                substeps: 6,
                ..shard()
            },
        ),
        (
            "2 substeps",
            PhysicsSettings {
                substeps: 2,
                ..shard()
            },
        ),
        (
            "islands and sleeping on",
            PhysicsSettings {
                sleeping: true,
                ..shard()
            },
        ),
        (
            "tree: full rebuild every step",
            PhysicsSettings {
                tree: TreeOptimizationMode::FullRebuild,
                ..shard()
            },
        ),
        (
            "tree: reinsert moved leaves",
            PhysicsSettings {
                tree: TreeOptimizationMode::Reinsert,
                ..shard()
            },
        ),
    ];
    println!("| setting | 5,000 bodies mean / p99 | 20,000 bodies mean / p99 |");
    println!("|---|---|---|");
    let mut scenes: Vec<Fleet> = [5_000, 20_000]
        .into_iter()
        .map(one_shard_after_warm_up)
        .collect();
    for (name, settings) in variants {
        let cells: Vec<String> = scenes
            .iter_mut()
            .map(|f| {
                let mut bare = bare_physics_of(f, settings.clone());
                let mut cpu: Vec<f64> = (0..150).map(|_| timed(|| bare.update()).1).collect();
                format!("{:.2} / {:.2}", mean(&cpu), percentile(&mut cpu, 0.99))
            })
            .collect();
        println!("| {name} | {} | {} |", cells[0], cells[1]);
    }
}

/// Where a shard's tick goes, by phase: receive (messages from replication), game rules
/// (steering, firing, ageing), avian's stages (prepare, broad phase, narrow phase, solver with
/// its substeps, finalize, writeback), handover checks, report (encoding the update batch,
/// gauges), and what `App::update` spends outside the fixed tick (the load report, time). Marker
/// systems between the shard's `TickSet`s and avian's system sets take the time; wall clock, one
/// thread. The bare app (the same bodies, avian alone) gets the same physics markers, beside.
fn tick_breakdown() {
    use bevy::prelude::*;
    use sidereal_shard::components::TickSet;

    const PHASES: [&str; 10] = [
        "receive",
        "game rules",
        "physics: prepare",
        "physics: broad phase",
        "physics: narrow phase",
        "physics: solver and integration",
        "physics: finalize (tree update)",
        "physics: writeback",
        "handover checks",
        "report (update encoding, gauges)",
    ];

    println!("\n## where a shard's tick goes (release, one core, wall time per tick)");
    for n in [5_000, 20_000] {
        let mut f = one_shard_after_warm_up(n);
        let mut bare = bare_physics_of(&mut f, Default::default());
        for app in [&mut f.shards[0].as_mut().unwrap().app, &mut bare] {
            app.init_resource::<Phases>()
                .add_systems(FixedFirst, start_phases);
            add_physics_marks(app);
        }
        f.shards[0].as_mut().unwrap().app.add_systems(
            FixedUpdate,
            (
                mark::<0>.after(TickSet::Receive).before(TickSet::Act),
                mark::<1>.after(TickSet::Act),
            ),
        );
        f.shards[0].as_mut().unwrap().app.add_systems(
            FixedLast,
            (
                mark::<8>.after(TickSet::Settle).before(TickSet::Report),
                mark::<9>.after(TickSet::Report),
            ),
        );
        let ticks = 300;
        let (mut shard_total, mut bare_total) = (Duration::ZERO, Duration::ZERO);
        for _ in 0..ticks {
            let t = Instant::now();
            bare.update();
            bare_total += t.elapsed();
            let t = Instant::now();
            f.shards[0].as_mut().unwrap().app.update();
            shard_total += t.elapsed();
            f.step_replication_only();
        }
        let spent = |app: &App| app.world().resource::<Phases>().spent;
        let (shard, bare) = (spent(&f.shards[0].as_ref().unwrap().app), spent(&bare));
        let per_tick = |d: Duration| d.as_secs_f64() * 1000.0 / f64::from(ticks);
        let share = |d: Duration, of: Duration| 100.0 * d.as_secs_f64() / of.as_secs_f64();
        println!(
            "\n{n} bodies: shard {:.2} ms per tick, bare avian2d {:.2} ms\n",
            per_tick(shard_total),
            per_tick(bare_total)
        );
        println!("| phase | shard ms per tick | share | bare avian2d ms per tick |");
        println!("|---|---|---|---|");
        let outside = |total: Duration, spent: &[Duration; 10]| {
            total.saturating_sub(spent.iter().sum::<Duration>())
        };
        let rows = PHASES
            .iter()
            .copied()
            .zip(shard.into_iter().zip(bare))
            .chain([(
                "outside the fixed tick (load report, time)",
                (outside(shard_total, &shard), outside(bare_total, &bare)),
            )]);
        for (name, (s, b)) in rows {
            let bare_ms = if name.starts_with("physics") || name.starts_with("outside") {
                format!("{:.2}", per_tick(b))
            } else {
                "-".into()
            };
            println!(
                "| {name} | {:.2} | {:.0}% | {bare_ms} |",
                per_tick(s),
                share(s, shard_total)
            );
        }
    }
}

/// Time spent per phase of a tick, taken by marker systems.
#[derive(bevy::prelude::Resource, Default)]
struct Phases {
    last: Option<Instant>,
    spent: [Duration; 10],
}

fn start_phases(mut p: bevy::prelude::ResMut<Phases>) {
    p.last = Some(Instant::now());
}

fn mark<const I: usize>(mut p: bevy::prelude::ResMut<Phases>) {
    let now = Instant::now();
    if let Some(last) = p.last {
        p.spent[I] += now - last;
    }
    p.last = Some(now);
}

/// Markers between avian's stages (phases 2 to 7 of `tick_breakdown`).
fn add_physics_marks(app: &mut bevy::prelude::App) {
    use avian2d::prelude::{PhysicsSchedule, PhysicsStepSystems, PhysicsSystems};
    use bevy::prelude::*;
    app.add_systems(
        FixedPostUpdate,
        (
            mark::<2>
                .after(PhysicsSystems::Prepare)
                .before(PhysicsSystems::StepSimulation),
            mark::<7>.after(PhysicsSystems::Last),
        ),
    )
    .add_systems(
        PhysicsSchedule,
        (
            mark::<3>
                .after(PhysicsStepSystems::BroadPhase)
                .before(PhysicsStepSystems::NarrowPhase),
            mark::<4>
                .after(PhysicsStepSystems::NarrowPhase)
                .before(PhysicsStepSystems::Solver),
            mark::<5>
                .after(PhysicsStepSystems::Solver)
                .before(PhysicsStepSystems::Sleeping),
            mark::<6>.after(PhysicsStepSystems::Last),
        ),
    );
}

/// What a shard of `sidereal up` does, in-process: the default world (four scale-2 roots),
/// 2,000 entities, 3 shards placed evenly, projectiles, shadows from replication every tick,
/// handovers. Per shard: the fixed tick as the shard measures it (what it reports), and the
/// whole `App::update` around it.
fn live_shard_tick() {
    println!("\n## live shard tick (the `sidereal up` defaults, in-process, release)");
    let world: Vec<SectorId> = ["s2-xm1-ym1", "s2-x0-ym1", "s2-xm1-y0", "s2-x0-y0"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    let mut f = Fleet::new(world, 3, 90);
    f.seed(2000, 42);
    f.place_even();
    for _ in 0..60 {
        f.step();
    }
    let n = f.shards.len();
    let mut cpu = vec![Vec::new(); n];
    let handovers0 = f.authority.counters.handovers;
    for _ in 0..300 {
        for (i, s) in f.shards.iter_mut().enumerate() {
            let app = &mut s.as_mut().unwrap().app;
            cpu[i].push(timed(|| app.update()).1);
        }
        f.step_replication_only();
    }
    // What each shard measured of its own fixed ticks (the last 300: the loop above).
    let fixed: Vec<((f32, f32), (f32, f32))> = f
        .shards
        .iter()
        .map(|s| {
            let t = s
                .as_ref()
                .unwrap()
                .app
                .world()
                .resource::<sidereal_shard::load::TickTimes>();
            (t.cpu.summary(), t.wall.summary())
        })
        .collect();
    // The same ticks paced at 30 Hz, as a live shard runs them: between two ticks the thread
    // sleeps, and its caches and the core's clock go cold. This is what a live shard reports.
    let mut paced = vec![Vec::new(); n];
    for _ in 0..150 {
        let round = Instant::now();
        for (i, s) in f.shards.iter_mut().enumerate() {
            let app = &mut s.as_mut().unwrap().app;
            paced[i].push(timed(|| app.update()).1);
        }
        f.step_replication_only();
        std::thread::sleep(Duration::from_secs_f64(1.0 / 30.0).saturating_sub(round.elapsed()));
    }
    println!(
        "{} handovers in 300 ticks",
        f.authority.counters.handovers - handovers0
    );
    println!(
        "| shard | entities | shadows | fixed tick CPU mean / p99 ms | fixed tick wall mean / p99 ms | App::update CPU mean / p99 ms, back to back | same, paced at 30 Hz |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (i, s) in f.shards.iter().enumerate() {
        let world = s.as_ref().unwrap().app.world();
        let own = world.resource::<sidereal_shard::ownership::Ownership>();
        let ((cm, cp), (wm, wp)) = fixed[i];
        println!(
            "| shard-{i} | {} | {} | {cm:.2} / {cp:.2} | {wm:.2} / {wp:.2} | {:.2} / {:.2} | {:.2} / {:.2} |",
            own.entities.len(),
            own.shadow_count(),
            mean(&cpu[i]),
            percentile(&mut cpu[i], 0.99),
            mean(&paced[i]),
            percentile(&mut paced[i], 0.99)
        );
    }
}

/// Bytes per changed entity on the link and how fast the mirror ingests them.
fn link_and_mirror() {
    println!("\n## shard link and mirror");
    let mut f = Fleet::new(vec![SectorId::new(2, 0, 0).unwrap()], 3, 45);
    f.seed(3000, 9);
    f.place_even();
    for _ in 0..600 {
        f.step();
    }
    println!(
        "bytes per entity update (3 shards, 3000 entities, 20 s, batch overhead included): {:.2}",
        f.update_bytes as f64 / f.update_entries as f64
    );

    // Mirror ingest: 10k moving entities, batches as a shard would send them.
    let n = 10_000u64;
    let mut a = Authority::new(AuthorityConfig {
        world: vec![SectorId::new(4, 0, 0).unwrap()],
        secret: "s".into(),
        tick_hz: 30,
        shadow_margin: 50.0,
    });
    let link = a.connect([1; 32]);
    a.on_message(
        link,
        ShardMessage::hello("s", &[1; 32], ShardId::new("shard-0"), [2; 32]),
    )
    .unwrap();
    let mut p = Placement {
        generation: 1,
        sectors: Default::default(),
        world: None,
    };
    p.sectors
        .insert(SectorId::new(4, 0, 0).unwrap(), ShardId::new("shard-0"));
    let mut states: Vec<(EntityId, u64, EntityState)> = (0..n)
        .map(|i| {
            (
                EntityId(i + 1),
                0,
                EntityState {
                    pos: [
                        (i % 100) as f32 * 100.0 + 5.0,
                        (i / 100) as f32 * 100.0 + 5.0,
                    ],
                    vel: [20.0, -10.0],
                    angle: 0.0,
                    ang_vel: 0.1,
                },
            )
        })
        .collect();
    for (id, _, s) in &states {
        a.restore_entity(
            EntitySnapshot {
                id: *id,
                kind: EntityKind::Asteroid,
                state: *s,
                ttl_ticks: None,
                player: false,
            },
            ShardId::new("unplaced"),
        );
    }
    a.put_placement(p).unwrap();
    let ids: Vec<_> = states
        .iter()
        .map(|(id, _, _)| (*id, a.mirror().get(*id).unwrap().epoch))
        .collect();
    a.on_message(link, ShardMessage::Adopted { ids: ids.clone() })
        .unwrap();
    for (s, (_, e)) in states.iter_mut().zip(&ids) {
        s.1 = *e;
    }
    let mut enc = UpdateEncoder::default();
    let mut batches = Vec::new();
    let mut encoding = Duration::ZERO;
    // A shard's batch comes in its ECS order, not sorted by id: shuffle it once.
    states.sort_by_key(|(id, _, _)| id.0.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    for tick in 0..60u64 {
        for (_, _, s) in states.iter_mut() {
            s.pos[0] += s.vel[0] / 30.0;
            s.pos[1] += s.vel[1] / 30.0;
            s.angle += s.ang_vel / 30.0;
        }
        let mut batch = states.clone();
        let t = Instant::now();
        batches.push(enc.encode(tick, &mut batch).unwrap());
        encoding += t.elapsed();
    }
    let bytes: usize = batches.iter().map(Vec::len).sum();
    println!(
        "encoding: {:.0} ns per entity update (sorting the batch included; 10k entities x 60 ticks)",
        encoding.as_secs_f64() * 1e9 / (n as f64 * 60.0)
    );
    let t = Instant::now();
    for b in batches {
        a.on_message(link, ShardMessage::Updates(b)).unwrap();
    }
    let secs = t.elapsed().as_secs_f64();
    let updates = a.counters.updates_applied as f64;
    println!(
        "mirror ingest: {updates:.0} updates in {secs:.3} s = {:.0} updates/s ({:.2} bytes/update, 10k entities x 60 ticks)",
        updates / secs,
        bytes as f64 / updates
    );
}

/// Ticks from crossing to being simulated by the new owner, and handovers per second.
fn handovers() {
    println!("\n## handover");
    // Many small sectors on alternating shards: constant crossings.
    let world = vec![SectorId::new(2, 0, 0).unwrap()];
    let mut f = Fleet::new(world.clone(), 2, 0);
    f.seed(4000, 13);
    let ids = f.shard_ids();
    let mut p = Placement {
        generation: 1,
        sectors: Default::default(),
        world: None,
    };
    let root = world[0];
    for c in root.children().unwrap() {
        for (j, g) in c.children().unwrap().into_iter().enumerate() {
            p.sectors
                .insert(g, ids[(j + (c.x + c.y) as usize) % 2].clone());
        }
    }
    f.place(p);
    let start_handovers = f.authority.counters.handovers;
    let t = Instant::now();
    for _ in 0..900 {
        f.step();
    }
    let secs = t.elapsed().as_secs_f64();
    let n = f.authority.counters.handovers - start_handovers;
    let mut ticks: Vec<f64> = f.handover_ticks.iter().map(|&t| t as f64).collect();
    let mean = ticks.iter().sum::<f64>() / ticks.len().max(1) as f64;
    let max = ticks.iter().copied().fold(0.0, f64::max);
    println!(
        "{n} handovers in 900 ticks (4000 entities, 16 sectors on 2 shards): ticks to new owner mean {mean:.2}, p99 {:.0}, max {max:.0}; {:.0} handovers/s of wall time with the whole fleet simulated in one thread ({secs:.1} s)",
        percentile(&mut ticks, 0.99),
        n as f64 / secs
    );
}

/// One shard with `n` bodies in the 16 scale-1 leaves of one scale-3 root, after warm-up.
fn sixteen_leaves_after_warm_up(n: usize) -> Fleet {
    let root = SectorId::new(3, 0, 0).unwrap();
    let mut f = Fleet::new(vec![root], 1, 90);
    f.seed(n, 5);
    let mut p = Placement {
        generation: 1,
        sectors: Default::default(),
        world: None,
    };
    for c in root.children().unwrap() {
        for leaf in c.children().unwrap() {
            p.sectors.insert(leaf, ShardId::new("shard-0"));
        }
    }
    f.place(p);
    for _ in 0..30 {
        f.step();
    }
    f
}

/// What publishing sector streams costs a shard: its tick with 0..64 subscribers, each wanting
/// every leaf (the worst case: a neighbour or a gateway wants a few), and with 64 subscribers
/// wanting 4 leaves each (gateways' interest); bytes per entity update and per subscriber.
fn sector_streams() {
    use sidereal_shard::streams::{HubEvent, MAX_QUEUED_FRAMES, SectorStreams};
    println!(
        "## sector streams (one shard, 10,000 bodies in 16 leaves, release, subscribers drained in-process)"
    );
    println!(
        "| subscribers x leaves | shard CPU mean ms | CPU p99 ms | publishing ms per tick | bytes per entity update | KiB per subscriber per tick |"
    );
    println!("|---|---|---|---|---|---|");
    for (subs, each) in [(0, 16), (1, 16), (4, 16), (16, 16), (64, 16), (64, 4)] {
        let mut f = sixteen_leaves_after_warm_up(10_000);
        let leaves: Vec<SectorId> = f.authority.placement().sectors.keys().copied().collect();
        let shard = f.shards[0].as_ref().unwrap();
        let mut inboxes = Vec::new();
        for i in 0..subs {
            let (frames, inbox) = crossbeam_channel::bounded(MAX_QUEUED_FRAMES);
            let _ = shard.streams.send(HubEvent::Joined {
                subscriber: i as u64 + 1,
                name: format!("sub-{i}"),
                frames,
            });
            let sectors = (0..each)
                .map(|k| leaves[(i * 5 + k) % leaves.len()])
                .collect();
            let _ = shard.streams.send(HubEvent::Subscribe {
                subscriber: i as u64 + 1,
                sectors,
                band: None,
            });
            inboxes.push(inbox);
        }
        let drain = |inboxes: &[crossbeam_channel::Receiver<sidereal_shard::streams::Frame>]| {
            inboxes
                .iter()
                .map(|r| r.try_iter().map(|b| b.len() as u64).sum::<u64>())
                .sum::<u64>()
        };
        for _ in 0..10 {
            f.step();
            drain(&inboxes);
        }
        let before = f.shards[0]
            .as_ref()
            .unwrap()
            .app
            .world()
            .resource::<SectorStreams>()
            .stats;
        let (mut cpu, mut bytes) = (Vec::new(), 0u64);
        const TICKS: usize = 300;
        for _ in 0..TICKS {
            let (_, c) = timed(|| f.shards[0].as_mut().unwrap().app.update());
            cpu.push(c);
            bytes += drain(&inboxes);
            f.step_replication_only();
        }
        let after = f.shards[0]
            .as_ref()
            .unwrap()
            .app
            .world()
            .resource::<SectorStreams>()
            .stats;
        let updates = after.entity_updates - before.entity_updates;
        let per_update = (after.update_bytes - before.update_bytes) as f64 / updates.max(1) as f64;
        let publish_ms = (after.publish_nanos - before.publish_nanos) as f64 / 1e6 / TICKS as f64;
        println!(
            "| {subs} x {each} | {:.2} | {:.2} | {publish_ms:.3} | {} | {:.1} |",
            mean(&cpu),
            percentile(&mut cpu, 0.99),
            if subs == 0 {
                "-".to_owned()
            } else {
                format!("{per_update:.2}")
            },
            bytes as f64 / 1024.0 / (TICKS * subs.max(1)) as f64
        );
    }
}

fn main() {
    let which = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    if which.as_deref().is_none_or(|w| w == "bare") {
        bare_physics_beside_the_shard();
    }
    if which.as_deref().is_none_or(|w| w == "settings") {
        physics_settings();
    }
    if which.as_deref().is_none_or(|w| w == "breakdown") {
        tick_breakdown();
    }
    if which.as_deref().is_none_or(|w| w == "tick") {
        shard_tick_cost();
    }
    if which.as_deref().is_none_or(|w| w == "live") {
        live_shard_tick();
    }
    if which.as_deref().is_none_or(|w| w == "link") {
        link_and_mirror();
    }
    if which.as_deref().is_none_or(|w| w == "handover") {
        handovers();
    }
    if which.as_deref().is_none_or(|w| w == "streams") {
        sector_streams();
    }
}
