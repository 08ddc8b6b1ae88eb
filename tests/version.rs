//! One version for the crate, the wheel and the npm package: the workspace's, checked against every
//! place that states it (the bindings' runtime checks are in their own test suites).

use std::path::Path;

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn read(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("reading {}: {e}", full.display()))
}

#[test]
fn the_npm_package_and_its_lock_file_carry_the_workspace_version() {
    let package: serde_json::Value = serde_json::from_str(&read("bindings/node/package.json")).unwrap();
    assert_eq!(package["version"], VERSION);
    let lock: serde_json::Value = serde_json::from_str(&read("bindings/node/package-lock.json")).unwrap();
    assert_eq!(lock["version"], VERSION);
    assert_eq!(lock["packages"][""]["version"], VERSION);
}

#[test]
fn the_python_package_takes_its_version_from_the_crate() {
    let pyproject = read("bindings/python/pyproject.toml");
    assert!(pyproject.contains(r#"dynamic = ["version"]"#), "pyproject.toml must take the version from Cargo.toml");
    assert!(
        !pyproject.lines().any(|l| l.trim_start().starts_with("version =")),
        "pyproject.toml states a version of its own"
    );
    for manifest in [
        "bindings/python/Cargo.toml",
        "bindings/node/Cargo.toml",
        "cli/Cargo.toml",
        "server/Cargo.toml",
        "crates/onnx/Cargo.toml",
        "crates/native/Cargo.toml",
        "crates/oip/Cargo.toml",
        "crates/backtest/Cargo.toml",
    ] {
        assert!(read(manifest).contains("version.workspace = true"), "{manifest} does not use the workspace version");
    }
}

#[test]
fn crates_depend_on_each_other_at_the_workspace_version() {
    let pin = format!(r#"version = "{VERSION}""#);
    for (manifest, dependency) in [
        ("cli/Cargo.toml", "quorum ="),
        ("cli/Cargo.toml", "quorum-server ="),
        ("cli/Cargo.toml", "quorum-backtest ="),
        ("server/Cargo.toml", "quorum ="),
        ("Cargo.toml", "quorum-onnx ="),
        ("Cargo.toml", "quorum-native ="),
        ("Cargo.toml", "quorum-oip ="),
        ("crates/native/Cargo.toml", "quorum-onnx ="),
        ("crates/backtest/Cargo.toml", "quorum ="),
    ] {
        let text = read(manifest);
        let line =
            text.lines().find(|l| l.starts_with(dependency)).unwrap_or_else(|| panic!("{manifest}: no {dependency}"));
        assert!(line.contains(&pin), "{manifest}: {line} is not pinned to {VERSION}");
    }
}

#[test]
fn the_changelog_has_a_section_for_the_version() {
    let changelog = read("CHANGELOG.md");
    let heading = format!("## [{VERSION}] - ");
    let line = changelog.lines().find(|l| l.starts_with(&heading)).expect("a `## [VERSION] - DATE` section");
    let date = &line[heading.len()..];
    let valid = date.len() == 10
        && date.chars().enumerate().all(|(i, c)| if i == 4 || i == 7 { c == '-' } else { c.is_ascii_digit() });
    assert!(valid, "the section's date {date:?} is not YYYY-MM-DD");
    assert!(changelog.contains("## [Unreleased]"), "Keep a Changelog keeps an Unreleased section on top");
    assert!(changelog.contains(&format!("[{VERSION}]: ")), "the version's link reference is missing");
}
