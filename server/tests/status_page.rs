//! The live status page in a real browser: headless Chromium (Debian's `chromium`) opens `/status`
//! with the token in the URL fragment, the page fetches `/api/v1/ml/status` and draws its charts; the
//! DOM after the scripts ran must hold latency, weight and accuracy series with real points, and each
//! member's row. A screenshot is taken too (`QUORUM_STATUS_SCREENSHOT=path` keeps it, for the README).

mod support;

use std::process::Command;
use std::time::Duration;

use support::{common, Running, PREDICTOR};

fn chromium(args: &[&str], profile: &std::path::Path) -> Option<std::process::Output> {
    let binary =
        ["chromium", "chromium-browser"].into_iter().find(|b| Command::new(b).arg("--version").output().is_ok())?;
    let output = Command::new(binary)
        .args(["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .unwrap();
    Some(output)
}

/// The value of `attr` on each element of the dumped DOM that carries `marker`.
fn attribute_values<'a>(dom: &'a str, marker: &str, attr: &str) -> Vec<&'a str> {
    dom.match_indices(marker)
        .filter_map(|(i, _)| {
            let tag_start = dom[..i].rfind('<')?;
            let tag = &dom[tag_start..i + dom[i..].find('>')?];
            let at = tag.find(&format!("{attr}=\""))? + attr.len() + 2;
            Some(&tag[at..at + tag[at..].find('"')?])
        })
        .collect()
}

#[test]
fn the_status_page_draws_real_latency_weights_and_accuracy_in_a_browser() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = support::tokens_file(dir.path());
    let server = Running::market(|c| {
        c.tokens = Some(tokens);
        c.status_sample_ms = 200;
    });
    let engine = server.state().engine().clone();
    // Traffic and outcomes across several samples.
    let rows = common::holdout_features(200);
    for (i, features) in rows.iter().enumerate() {
        let p = engine.predict("market", features).unwrap();
        engine.record_outcome(p.request_id, (i % 2) as f64).unwrap();
        if i % 20 == 0 {
            std::thread::sleep(Duration::from_millis(120));
        }
    }
    // The page itself needs no token; its data does.
    let page = server.get("/status");
    assert_eq!(page.status, 200);
    assert!(page.header("content-security-policy").unwrap().contains("default-src 'none'"));
    assert_eq!(server.get("/api/v1/ml/status").status, 401);

    let profile = tempfile::tempdir().unwrap();
    let url = format!("http://{}/status#token={PREDICTOR}", server.addr);
    let Some(out) = chromium(&["--virtual-time-budget=8000", "--dump-dom", &url], profile.path()) else {
        eprintln!("SKIPPED the status page browser test: chromium is not installed (make monitoring-tools)");
        return;
    };
    let dom = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        dom.contains("data-loaded=\"true\""),
        "the page never loaded its data:\n{dom}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dom.contains("<div id=\"error\"></div>"), "the page reported an error:\n{dom}");
    // Every chart of the ensemble has series with several points.
    let series = attribute_values(&dom, "class=\"series\"", "data-series");
    let points: Vec<usize> =
        attribute_values(&dom, "class=\"series\"", "data-points").iter().map(|p| p.parse().unwrap()).collect();
    for name in ["p50", "p95", "p99", "technical", "fundamental", "sentiment", "requests/s"] {
        let at = series.iter().position(|s| *s == name).unwrap_or_else(|| panic!("no {name} series in {series:?}"));
        assert!(points[at] >= 2, "{name} has {} points", points[at]);
    }
    // Real values: latencies in (0, 1 s), the configured weights, accuracies in [0, 1].
    let last: Vec<f64> =
        attribute_values(&dom, "class=\"series\"", "data-last").iter().map(|v| v.parse().unwrap()).collect();
    let p95 = last[series.iter().position(|s| *s == "p95").unwrap()];
    assert!(p95 > 0.0 && p95 < 1000.0, "{p95} ms");
    let technical_weight = last[series.iter().position(|s| *s == "technical").unwrap()];
    assert!((technical_weight - 0.4).abs() < 1e-6, "{technical_weight}");
    for member in ["technical", "fundamental", "sentiment"] {
        assert!(dom.contains(&format!("data-member=\"{member}\"")), "no row for {member}");
    }
    assert!(dom.contains("<td class=\"closed\">closed</td>"));
    // The token left the address bar and never reached the server's log or the DOM.
    assert!(!dom.contains(PREDICTOR));

    let shot = std::env::var("QUORUM_STATUS_SCREENSHOT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| profile.path().join("status.png"));
    let out = chromium(
        &["--virtual-time-budget=8000", "--window-size=1280,1500", &format!("--screenshot={}", shot.display()), &url],
        profile.path(),
    )
    .unwrap();
    let png =
        std::fs::read(&shot).unwrap_or_else(|_| panic!("no screenshot: {}", String::from_utf8_lossy(&out.stderr)));
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "{} bytes", png.len());
}
