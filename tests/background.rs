//! The engine's background thread sleeps when it has nothing to do (its own test binary, so that no
//! other engine's threads are counted).

mod common;

use std::time::Duration;

use quorum::InferenceEngine;

/// CPU time (user + system, in clock ticks) of this process's threads named `quorum-background`.
#[cfg(target_os = "linux")]
fn background_cpu_ticks() -> u64 {
    let mut ticks = 0;
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let dir = task.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !comm.trim().starts_with("quorum-backgrou") {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap();
        // Fields after the parenthesised name: state is field 3, utime 14, stime 15.
        let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
        ticks += fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    }
    ticks
}

#[cfg(target_os = "linux")]
#[test]
fn without_persistence_the_background_thread_sleeps_instead_of_spinning() {
    let home = tempfile::tempdir().unwrap();
    common::market_engine(home.path());
    let engine = InferenceEngine::builder(home.path()).without_persistence().build().unwrap();
    engine.predict("market", &common::holdout_features(1)[0]).unwrap();
    // Past the one-second mark where a zero wait timeout once made the thread spin on a core.
    std::thread::sleep(Duration::from_millis(2500));
    let ticks = background_cpu_ticks();
    // Clock ticks are 10 ms; the spinning thread used 17 over this test, the sleeping one 0.
    assert!(ticks < 5, "the background thread used {ticks} ticks of CPU while idle");
}
