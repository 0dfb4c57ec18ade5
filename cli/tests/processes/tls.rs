//! TLS on what players reach over the internet, with a certificate the test makes and curl as
//! the real TLS client: login over HTTPS (plain HTTP on that port gets nothing), `wss://` on the
//! WebSocket game port, a renewed certificate picked up without a restart, and a public listener
//! in clear refused unless it is asked for explicitly.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::gateways::start_gateway_with;
use super::{TempDir, free_port, sidereal, start_replication_with, wait_until};

/// A self-signed certificate for 127.0.0.1 and localhost, written as `<name>.pem` and
/// `<name>.key` under `dir`: (cert path, key path).
fn certificate(dir: &Path, name: &str) -> (String, String) {
    let c = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
        .expect("a certificate");
    let (cert, key) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert, c.cert.pem()).unwrap();
    std::fs::write(&key, c.key_pair.serialize_pem()).unwrap();
    (cert.display().to_string(), key.display().to_string())
}

/// curl's HTTP status (000 when no HTTP answer came) and body.
fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "5", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.to_owned(), body.to_owned())
}

#[test]
fn login_and_websocket_speak_tls_and_a_renewed_certificate_is_picked_up() {
    let data = TempDir::new("tls");
    let (cert, key) = certificate(&data.0, "first");
    let (live_cert, live_key) = (
        data.0.join("live.pem").display().to_string(),
        data.0.join("live.key").display().to_string(),
    );
    std::fs::copy(&cert, &live_cert).unwrap();
    std::fs::copy(&key, &live_key).unwrap();
    let ws = free_port();
    let r = start_replication_with(
        0,
        &data.0,
        None,
        &[
            "--public-http",
            "127.0.0.1:0",
            "--tls-cert",
            &live_cert,
            "--tls-key",
            &live_key,
            "--game-ws",
            &format!("127.0.0.1:{ws}"),
        ],
    );
    let port = r
        .public
        .clone()
        .expect("a public listener")
        .rsplit(':')
        .next()
        .unwrap()
        .to_owned();
    let https = format!("https://127.0.0.1:{port}");
    let body = r#"{"name":"ada","password":"correct horse battery"}"#;
    let json = ["-H", "content-type: application/json", "--data", body];

    // Registration over HTTPS, trusting only the test's certificate.
    let (code, reply) = curl(
        &[
            &["--cacert", &cert][..],
            &json,
            &[&format!("{https}/v1/accounts")],
        ]
        .concat(),
    );
    assert_eq!(code, "201", "{reply}");
    assert!(reply.contains("\"token\""), "{reply}");
    // Plain HTTP on the TLS port gets no HTTP answer, and an untrusted client no session.
    let (code, _) = curl(&[&json[..], &[&format!("http://127.0.0.1:{port}/v1/login")]].concat());
    assert_eq!(code, "000", "no login in clear");
    let (code, _) = curl(&[&json[..], &[&format!("{https}/v1/login")]].concat());
    assert_eq!(
        code, "000",
        "a client that does not trust the certificate gets nothing"
    );

    // wss:// on the WebSocket game port: a TLS handshake, then the WebSocket upgrade.
    let upgrade = |ca: &str| wss_upgrade(ws, ca);
    wait_until(
        "wss:// answers the upgrade",
        Duration::from_secs(10),
        || upgrade(&cert) == "101",
    );

    // A renewal (cert-manager rewrites the Secret's files): new connections get the new one.
    let (renewed, renewed_key) = certificate(&data.0, "second");
    std::fs::copy(&renewed_key, &live_key).unwrap();
    std::fs::copy(&renewed, &live_cert).unwrap();
    let login = |ca: &str| {
        curl(
            &[
                &["--cacert", ca][..],
                &json,
                &[&format!("{https}/v1/login")],
            ]
            .concat(),
        )
        .0
    };
    wait_until(
        "the renewed certificate served",
        Duration::from_secs(15),
        || login(&renewed) == "200",
    );
    assert_eq!(
        login(&cert),
        "000",
        "the old certificate is no longer served"
    );

    // A bot logs in over HTTPS trusting the certificate (`--tls-ca`), then flies over UDP.
    let bot = sidereal()
        .args([
            "bot",
            "--count",
            "1",
            "--duration",
            "2",
            "--prefix",
            "tlsbot",
        ])
        .args(["--http", &https, "--tls-ca", &renewed])
        .output()
        .expect("sidereal bot");
    let out = String::from_utf8_lossy(&bot.stdout);
    assert!(
        bot.status.success() && out.contains("tlsbot-0"),
        "{out}\n{}",
        String::from_utf8_lossy(&bot.stderr)
    );

    // A public listener in clear is refused unless asked for.
    let refused = sidereal()
        .args([
            "replication",
            "--http",
            "127.0.0.1:0",
            "--link",
            "127.0.0.1:0",
        ])
        .args(["--public-http", "127.0.0.1:0", "--data"])
        .arg(&data.0)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("sidereal replication");
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(
        why.contains("--tls-cert") && why.contains("--insecure-public-http"),
        "{why}"
    );
}

/// The HTTP status of a WebSocket upgrade over TLS to `127.0.0.1:port`, trusting `ca`
/// (000: no TLS handshake or no answer).
fn wss_upgrade(port: u16, ca: &str) -> String {
    curl(&[
        "--cacert",
        ca,
        "--http1.1",
        "-o",
        "/dev/null",
        "-H",
        "Connection: Upgrade",
        "-H",
        "Upgrade: websocket",
        "-H",
        "Sec-WebSocket-Version: 13",
        "-H",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        &format!("https://127.0.0.1:{port}/"),
    ])
    .0
}

/// A gateway serves wss:// with its certificate (the chart gives it replication's); a client
/// that does not trust it gets no upgrade.
#[test]
fn a_gateway_serves_wss_with_its_certificate() {
    let data = TempDir::new("gateway-tls");
    let (cert, key) = certificate(&data.0, "gateway");
    let (other, _) = certificate(&data.0, "other");
    let r = start_replication_with(
        100,
        &data.0,
        None,
        &["--no-game", "--gateway-link", "127.0.0.1:0"],
    );
    let link = r.gateways.clone().expect("a gateway link");
    let g = start_gateway_with(
        &link,
        "gw-tls",
        None,
        1500.0,
        &[
            "--game-ws",
            "127.0.0.1:0",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ],
    );
    let ws = g.websocket.expect("a WebSocket port").port();
    wait_until(
        "wss:// answers the upgrade",
        Duration::from_secs(10),
        || wss_upgrade(ws, &cert) == "101",
    );
    assert_eq!(
        wss_upgrade(ws, &other),
        "000",
        "a client that does not trust the certificate gets nothing"
    );
}
