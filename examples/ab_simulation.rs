//! The experiment's decision rules on simulated outcomes: an A/A test (identical arms) and a worse
//! treatment, 1 000 experiments each, looked at after every outcome; beside them a naive two-sample
//! z-test checked after every outcome. Prints the README's table.
//!
//! `cargo run --release --example ab_simulation [-- --runs N --max-outcomes N]`

use quorum::experiment::simulate::{simulate, Scenario};
use quorum::ExperimentConfig;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() -> quorum::Result<()> {
    let runs = arg("--runs", 1000) as usize;
    let mut config = ExperimentConfig::new("simulation", "market", 1, 2);
    config.min_outcomes_per_step = 100;
    config.max_outcomes = arg("--max-outcomes", 20_000);
    println!(
        "{runs} experiments per row; steps {:?} %, {} treatment outcomes per step, alpha {}, at most {} outcomes, log-loss",
        config.steps, config.min_outcomes_per_step, config.alpha, config.max_outcomes
    );
    println!();
    println!("| treatment | δ log-loss | rolled back | promoted | no difference | median outcomes to decide | naive z-test decided |");
    println!("|---|---|---|---|---|---|---|");
    for (label, noise) in [("identical (A/A)", 0.0), ("noisier logit (σ 0.5)", 0.5), ("noisier logit (σ 0.8)", 0.8)] {
        let started = std::time::Instant::now();
        let r = simulate(&config, &Scenario { treatment_logit_noise: noise, runs, seed: 2026 })?;
        let pct = |n: usize| format!("{:.1}%", 100.0 * n as f64 / runs as f64);
        println!(
            "| {label} | {:+.4} | {} | {} | {} | {} | {} |",
            r.delta_log_loss,
            pct(r.rolled_back),
            pct(r.promoted),
            pct(r.no_difference),
            r.median_outcomes_to_decision.map_or("-".into(), |m| m.to_string()),
            pct(r.naive_decisions)
        );
        eprintln!("  ({label}: {:.1} s)", started.elapsed().as_secs_f64());
    }
    Ok(())
}
