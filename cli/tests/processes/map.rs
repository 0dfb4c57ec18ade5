//! The live sector map of `sidereal up`, for real: its event stream over a real socket, and the
//! page in a real browser (Debian's headless Chromium), checked by its pixels, before and after
//! a split.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use sidereal_core::{Placement, SectorId};

use super::{TempDir, start_up_with, token_of, wait_until};

fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("SIDEREAL_CHROMIUM") {
        return p.into();
    }
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if let Ok(out) = Command::new("which").arg(name).output()
            && out.status.success()
        {
            return String::from_utf8_lossy(&out.stdout).trim().into();
        }
    }
    panic!("no Chromium: `make test` installs Debian's chromium (or set SIDEREAL_CHROMIUM)");
}

/// Chromium, headless, on `url` for `budget_ms` of page time: a screenshot into `png`, and the
/// DOM it ended with.
fn browse(url: &str, png: &Path, budget_ms: u32) -> String {
    let profile = png.with_extension("profile");
    let base = |c: &mut Command| {
        c.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--window-size=800,600",
            &format!("--virtual-time-budget={budget_ms}"),
        ])
        .arg(format!("--user-data-dir={}", profile.display()));
    };
    let mut shot = Command::new(chromium());
    base(&mut shot);
    let out = shot
        .arg(format!("--screenshot={}", png.display()))
        .arg(url)
        .output()
        .expect("chromium");
    assert!(
        png.exists(),
        "no screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut dom = Command::new(chromium());
    base(&mut dom);
    let out = dom.arg("--dump-dom").arg(url).output().expect("chromium");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The screenshot's pixels as RGB.
fn pixels(png: &Path) -> (u32, u32, Vec<[u8; 3]>) {
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(png).expect("the screenshot"),
    ));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("a size")];
    let info = reader.next_frame(&mut buf).expect("a frame");
    let step = info.color_type.samples();
    let px = buf[..info.buffer_size()]
        .chunks(step)
        .map(|c| [c[0], c[1], c[2]])
        .collect();
    (info.width, info.height, px)
}

/// A map ticket minted with the control token, as the page mints it.
fn ticket(base: &str, token: &str) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let r = reqwest::Client::new()
            .post(format!("{base}/v1/map/ticket"))
            .bearer_auth(token)
            .send()
            .await
            .expect("a ticket");
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        v["ticket"].as_str().expect("a ticket").to_owned()
    })
}

/// Reads server-sent events from the map stream until `n` frames have come.
fn frames(base: &str, token: &str, n: usize) -> Vec<Value> {
    let ticket = ticket(base, token);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut resp = reqwest::Client::new()
            .get(format!("{base}/v1/map/events?ticket={ticket}"))
            .timeout(Duration::from_secs(20))
            .send()
            .await
            .expect("the event stream");
        assert_eq!(resp.status(), 200);
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        let (mut text, mut out) = (String::new(), Vec::new());
        while out.len() < n {
            let chunk = resp
                .chunk()
                .await
                .expect("reading the stream")
                .expect("the stream ended");
            text.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = text.find("\n\n") {
                let event: String = text.drain(..end + 2).collect();
                if let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) {
                    out.push(serde_json::from_str(data).expect("a JSON frame"));
                }
            }
        }
        out
    })
}

#[test]
fn the_sector_map_shows_leaves_shards_and_entities_and_follows_a_split() {
    let data = TempDir::new("map");
    let (_up, _banner, base, _link) =
        start_up_with(&data, 2, 3000, &["--no-autoscale", "--bots", "3"]);
    let token = token_of(&data);
    // The frames need the token; the page itself does not.
    let control = super::Control::with_token(&base, Some(&token));
    let anonymous = control
        .run(reqwest::get(format!("{base}/v1/map/events")))
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    // The control token in a URL is refused (it would land in proxy logs), as are wrong,
    // malformed, forged and huge tickets: each a 4xx and no frame; the server carries on.
    let huge = "x".repeat(16_000);
    let good = ticket(&base, &token);
    let forged = good.replacen(good.split('.').next().unwrap(), "99999999999", 1);
    let anonymous_ticket = control
        .run(
            reqwest::Client::new()
                .post(format!("{base}/v1/map/ticket"))
                .send(),
        )
        .unwrap();
    assert_eq!(
        anonymous_ticket.status(),
        401,
        "tickets need the control token"
    );
    for query in [
        format!("token={token}"),
        "ticket=wrong".to_owned(),
        "ticket=%ZZ".to_owned(),
        "ticket=".to_owned(),
        format!("ticket={forged}"),
        format!("ticket={huge}"),
    ] {
        for path in ["/v1/map", "/v1/map/events"] {
            let r = control
                .run(reqwest::get(format!("{base}{path}?{query}")))
                .map_err(reqwest::Error::without_url)
                .expect("an answer");
            let status = r.status().as_u16();
            assert!(
                (400..500).contains(&status),
                "{path}?{} answered {status}",
                &query[..query.len().min(20)]
            );
        }
    }
    let with_ticket = control
        .run(reqwest::get(format!("{base}/v1/map?ticket={good}")))
        .unwrap();
    assert_eq!(with_ticket.status(), 200, "a ticket opens the frames");
    let page = control.run(reqwest::get(format!("{base}/map"))).unwrap();
    assert_eq!(page.status(), 200);
    let html = control.run(page.text()).unwrap();
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "the page loads nothing from elsewhere"
    );

    // Shards report their load about once a second; the leaves carry it from then on.
    let loaded = |f: &Value| -> u64 {
        f["leaves"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["entities"].as_u64().unwrap())
            .sum()
    };
    wait_until(
        "the leaves carry their load",
        Duration::from_secs(15),
        || loaded(&frames(&base, &token, 1)[0]) >= 3000,
    );
    // The live stream: frames keep coming, entities move between them.
    let t0 = Instant::now();
    let live = frames(&base, &token, 3);
    let per_frame = t0.elapsed() / 3;
    assert_eq!(live[0]["leaves"].as_array().unwrap().len(), 4);
    assert_eq!(live[0]["shards"].as_array().unwrap().len(), 2);
    assert!(live[0]["total_entities"].as_u64().unwrap() >= 3000);
    let sampled = live[2]["entities"].as_array().unwrap().len();
    assert!(sampled >= 1000, "{sampled} entities in a frame");
    assert_ne!(live[0]["entities"], live[2]["entities"], "entities move");
    // `up` runs replication as the control plane: shards report entity state only when asked.
    // A watched map asks before each frame, so it moves four times a second, not once per
    // checkpoint: about 4 updates per entity per second reach replication while it is watched.
    let applied = || super::metric_at(&base, "sidereal_entity_updates_total{result=\"applied\"}");
    let (before, since) = (applied(), Instant::now());
    let watched = frames(&base, &token, 12);
    let rate = (applied() - before)
        / watched[11]["total_entities"].as_f64().unwrap()
        / since.elapsed().as_secs_f64();
    println!("while the map is watched: {rate:.2} updates per entity per second");
    assert!(
        rate > 2.0,
        "the watched map gets fresh state about four times a second, not once: {rate:.2}"
    );

    // The page in a browser: leaves tinted by shard and load, entities drawn.
    let dir = TempDir::new("map-shots");
    // The page streams its frames (EventSource); a headless screenshot waits for every request
    // to finish, so the browser loads it in its polling mode.
    assert!(html.contains("new EventSource(\"/v1/map/events\""));
    let url = format!("{base}/map?poll#token={token}");
    let before_png = dir.0.join("before.png");
    let dom = browse(&url, &before_png, 3000);
    assert!(
        dom.contains("data-leaves=\"4\""),
        "the page drew 4 leaves: {dom}"
    );
    let (w, h, before) = pixels(&before_png);
    assert_eq!((w, h), (800, 600));
    let background = [0x0b, 0x0e, 0x14];
    let tinted = before.iter().filter(|p| **p != background).count();
    let asteroids = before.iter().filter(|p| **p == [0x88, 0x92, 0xa6]).count();
    let ships = before.iter().filter(|p| **p == [0xff, 0xd1, 0x66]).count();
    println!(
        "map before the split: {tinted} of {} pixels tinted, {asteroids} asteroid and {ships} ship pixels; a frame every {per_frame:?}",
        before.len()
    );
    assert!(
        tinted > before.len() / 2,
        "the sectors fill the view: {tinted}"
    );
    assert!(asteroids > 200, "asteroids drawn: {asteroids} pixels");
    assert!(ships > 0, "the bots' ships drawn");

    // A split: the root s2-x0-y0 becomes its four children on the same shard.
    let current = control.placement();
    let root: SectorId = "s2-x0-y0".parse().unwrap();
    let shard = current.sectors[&root].clone();
    let mut split = Placement {
        generation: current.generation + 1,
        sectors: current.sectors.clone(),
        world: None,
    };
    split.sectors.remove(&root);
    for child in root.children().unwrap() {
        split.sectors.insert(child, shard.clone());
    }
    control.put_placement(&split).expect("the split");
    wait_until(
        "the stream shows the split",
        Duration::from_secs(10),
        || {
            let f = frames(&base, &token, 1);
            f[0]["leaves"].as_array().unwrap().len() == 7
        },
    );
    let after_png = dir.0.join("after.png");
    let dom = browse(&url, &after_png, 3000);
    assert!(
        dom.contains("data-leaves=\"7\""),
        "the page drew 7 leaves: {dom}"
    );
    let (_, _, after) = pixels(&after_png);
    // The children's outlines cross the split root: the same picture no more.
    let outline = [0xc0, 0xc8, 0xd8];
    let near = |p: &[u8; 3]| p.iter().zip(outline).all(|(a, b)| a.abs_diff(b) < 24);
    let (lines_before, lines_after) = (
        before.iter().filter(|p| near(p)).count(),
        after.iter().filter(|p| near(p)).count(),
    );
    println!("outline pixels: {lines_before} before the split, {lines_after} after");
    assert!(
        lines_after > lines_before + 200,
        "the split shows: {lines_before} -> {lines_after} outline pixels"
    );
}
