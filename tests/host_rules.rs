//! Agents' host rules and the destination guard see one destination however it is spelled:
//! through the running proxy, with the seller on 127.0.0.1 and the guard allowing it
//! (`guard.allow: 127.0.0.1:<port>, localhost:<port>`, as the harness writes them).

mod common;

use common::{Harness, Options};

const ALICE: (&str, &str) = ("alice", "alice-key");
const BOB: (&str, &str) = ("bob", "bob-key");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_address_is_denied_in_every_spelling() {
    let h = Harness::with(Options {
        alice_hosts: "{ deny: ['127.0.0.1'] }".into(),
        ..Options::default()
    })
    .await;
    let port = h.seller.http.port();
    for host in [
        "127.0.0.1",
        "127.1",
        "2130706433",
        "0x7f.1",
        "0177.0.0.1",
        "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]",
    ] {
        let url = format!("http://{host}:{port}/news/x");
        let r = h.get(ALICE, &url).await;
        assert_eq!(r.status, 402, "{url}: {r:?}");
        assert_eq!(r.decline(), Some("host-not-allowed"), "{url}: {r:?}");
    }
    assert_eq!(h.wallet.attempts(), 0, "nothing was paid");
    // The guard's allowance for 127.0.0.1 covers the other spellings of it: an agent without
    // host rules pays there (so the refusals above are alice's rules, not the guard).
    for (i, host) in ["127.1", "2130706433", "[::ffff:127.0.0.1]"]
        .iter()
        .enumerate()
    {
        let url = format!("http://{host}:{port}/news/{i}");
        let r = h.get(BOB, &url).await;
        assert_eq!(r.status, 200, "{url}: {r:?}");
        assert!(r.paid(), "{url}: {r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cidr_deny_catches_a_name_resolving_into_it() {
    let h = Harness::with(Options {
        alice_hosts: "{ deny: ['127.0.0.0/8'] }".into(),
        ..Options::default()
    })
    .await;
    let port = h.seller.http.port();
    for host in ["localhost", "LOCALHOST.", "127.0.0.1", "127.1"] {
        let url = format!("http://{host}:{port}/news/x");
        let r = h.get(ALICE, &url).await;
        assert_eq!(r.status, 402, "{url}: {r:?}");
        assert_eq!(r.decline(), Some("host-not-allowed"), "{url}: {r:?}");
    }
    // Over HTTPS (intercepted) too.
    let r = h.curl(Some(ALICE), &h.https_url("/weather/x"), &[]).await;
    assert_eq!(r.status, 402, "{r:?}");
    assert_eq!(r.decline(), Some("host-not-allowed"), "{r:?}");
    assert_eq!(h.wallet.attempts(), 0);
    let r = h.get(BOB, &format!("http://localhost:{port}/news/x")).await;
    assert!(r.paid(), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_forms_embedding_a_refused_ipv4_address_are_refused_by_the_guard() {
    let h = Harness::start().await;
    let port = h.seller.http.port();
    for host in [
        "[::127.0.0.1]",         // IPv4-compatible
        "[::ffff:0:127.0.0.1]",  // IPv4-translated
        "[64:ff9b::127.0.0.1]",  // NAT64
        "[64:ff9b::a9fe:a9fe]",  // NAT64 to the metadata address
        "[64:ff9b:1::a00:1]",    // local-use NAT64 to 10.0.0.1
        "[2002:7f00:1::1]",      // 6to4 of 127.0.0.1
        "[2002:a9fe:a9fe::1]",   // 6to4 of 169.254.169.254
        "[2001:0:4136:e378::1]", // Teredo
        "[fec0::1]",             // site-local
        "[100::1]",              // discard
        "[2001:db8::1]",         // documentation
        "[::]",
        "[::1]",
        "[fd00::1]",
        "[fe80::1]",
        "[ff02::1]",
    ] {
        let url = format!("http://{host}:{port}/free/x");
        let r = h.get(ALICE, &url).await;
        assert_eq!(r.status, 403, "{url}: {r:?}");
        assert_eq!(
            r.header("x-l402-proxy-error"),
            Some("destination-refused"),
            "{url}: {r:?}"
        );
    }
    // Names and spellings the allowance does not cover stay refused.
    for host in ["127.2", "0x7f.2", "127.0.0.2"] {
        let r = h.get(ALICE, &format!("http://{host}:{port}/free/x")).await;
        assert_eq!(r.status, 403, "{host}: {r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_host_rules_are_config_errors_naming_the_entry() {
    let text = "wallet: { backend: dev }\nagents:\n  - name: a\n    key_sha256: \"2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae\"\n    hosts: { allow: ['*.example.com', '10.0.0.0/40'] }\n";
    let e = l402_proxy::config::Config::parse(text).unwrap_err();
    assert_eq!(e.field, "agents[0].hosts.allow[1]", "{e}");
    assert!(e.problem.contains("0 to 32"), "{e}");
}

/// `hosts.deny: ["127.0.0.1"]` is about the address: `http://LOCALHOST:…` (any spelling of a
/// name resolving to it) is refused too, not only the literal's spellings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ip_deny_catches_names_resolving_to_it() {
    let h = Harness::with(Options {
        alice_hosts: "{ deny: ['127.0.0.1'] }".into(),
        ..Options::default()
    })
    .await;
    let port = h.seller.http.port();
    for host in ["localhost", "LOCALHOST", "LOCALHOST.", "LocalHost"] {
        let url = format!("http://{host}:{port}/news/x");
        let r = h.get(ALICE, &url).await;
        assert_eq!(r.status, 402, "{url}: {r:?}");
        assert_eq!(r.decline(), Some("host-not-allowed"), "{url}: {r:?}");
    }
    assert_eq!(h.wallet.attempts(), 0, "nothing was paid");
    // Bob, without rules, pays there: the refusals are alice's rule, not the guard.
    let r = h.get(BOB, &format!("http://LOCALHOST:{port}/news/y")).await;
    assert!(r.paid(), "{r:?}");
}
