//! `quorum`: the command-line face of the library, working on a quorum home directory.

/// `println!` for a command's output: when the reader has gone away (`quorum ... | head`), the
/// command stops and `main` exits quietly with 141, as Unix tools do, instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => { $crate::emit_line(format_args!($($arg)*))? };
}

mod watch;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

// mimalloc rather than glibc's malloc: under HTTP load glibc spent ~11% of the server's CPU in
// malloc/free (perf, `make load-serve`); ONNX Runtime keeps its own allocator either way.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use quorum::replay::{self, ReplayOptions};
use quorum::{
    EnsembleConfig, Error, ExperimentConfig, Features, InferenceEngine, MemberSpec, ModelKind, ModelRegistration,
    OutputSpec, Registry, Result, StateUrl, StrategyKind, Task,
};

#[derive(Parser, Debug)]
#[command(name = "quorum", version, about = "Ensembles of ONNX models, in-process", long_about = None)]
struct Cli {
    /// The quorum home: models, ensembles and state live here [default: ./quorum-home].
    #[arg(long, global = true, env = "QUORUM_HOME")]
    home: Option<PathBuf>,
    /// Where learnt weights, tracked metrics and the inference log live: sqlite:<path> [default:
    /// <home>/state.sqlite] or postgres://user@host:port/db (shared by several servers).
    #[arg(long, global = true, env = "QUORUM_STATE", hide_env_values = true)]
    state: Option<String>,
    #[command(subcommand)]
    command: Command,
}

/// `--state`, set once from the command line before any engine is built.
static STATE: std::sync::OnceLock<Option<StateUrl>> = std::sync::OnceLock::new();

#[derive(Subcommand, Debug)]
enum Command {
    /// Register, list, show and remove models.
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Create, list and show ensembles.
    #[command(subcommand)]
    Ensemble(EnsembleCommand),
    /// Predict one request: prints the prediction as JSON.
    Predict {
        ensemble: String,
        /// Features as a JSON object: '{"f1": 0.1, ...}', '@file.json' to read a file, or '-' for stdin.
        #[arg(long)]
        features: String,
        /// Picks the experiment arm while the ensemble runs an experiment (a user, an account, a symbol).
        #[arg(long)]
        routing_key: Option<String>,
    },
    /// A/B experiments between two versions of an ensemble: start, status, pause, resume, stop, list.
    #[command(subcommand)]
    Experiment(ExperimentCommand),
    /// Build quantized / optimised candidates of a model, benchmark them on data, and register the
    /// fastest one within the accuracy threshold as a new version (or keep the original).
    Optimize {
        /// `name` or `name@version` (default version when absent).
        model: String,
        #[arg(long)]
        data: PathBuf,
        /// The column with each row's outcome (accuracy is measured against it).
        #[arg(long)]
        outcome: String,
        /// Largest accuracy loss accepted, absolute (0.01 = one point).
        #[arg(long, default_value_t = 0.01)]
        accuracy_threshold: f64,
        /// p50 single-row latency a deployment needs, in ms (deployment_ready requires it).
        #[arg(long)]
        target_latency_ms: Option<f64>,
        /// Methods to try, comma-separated: fp32-optimized, int8-dynamic, int8-dynamic-per-channel,
        /// int8-static-minmax, int8-static-percentile, int8-static-entropy, fp16, native, native-gpu,
        /// native-gpu-fp16 (default: all but the GPU ones; those too with a GPU provider).
        #[arg(long, value_delimiter = ',')]
        method: Vec<String>,
        /// Where the model will run, and so where it is benchmarked: cpu, cuda or tensorrt (device 0);
        /// fp16 is tried on a GPU provider only.
        #[arg(long, default_value = "cpu")]
        provider: String,
        /// The workload to decide for: batch sizes and their share of calls, e.g. 1:0.2,64:0.8
        /// (default 1:1, single rows; sizes among 1, 8, 64, 512).
        #[arg(long, default_value = "1:1")]
        batch_sizes: String,
        /// Graph optimisation level of the saved fp32-optimized candidate: basic, extended (portable)
        /// or all (this machine's CPU layout).
        #[arg(long, default_value = "extended")]
        graph_level: String,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Rewrite one ONNX file with one method (no registry, no decision): prints the per-node report.
    Quantize {
        /// The float32 model.
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// int8-dynamic, int8-dynamic-per-channel, int8-static-minmax, int8-static-percentile,
        /// int8-static-entropy or fp16.
        #[arg(long)]
        method: String,
        /// Static methods: calibrate on these rows (CSV) ...
        #[arg(long)]
        data: Option<PathBuf>,
        /// ... of these columns, in the model's input order (comma-separated).
        #[arg(long, value_delimiter = ',')]
        features: Vec<String>,
        /// Static methods: quantize weights per output channel.
        #[arg(long)]
        per_channel: bool,
        #[arg(long)]
        json: bool,
    },
    /// Benchmark a model on data: latency at batch 1/8/64/512, throughput, size, memory, accuracy.
    Benchmark {
        /// `name` or `name@version`.
        model: String,
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        outcome: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Walk-forward comparison of every way to combine the ensemble's members, in time order.
    Backtest {
        ensemble: String,
        #[arg(long)]
        data: PathBuf,
        /// The column with each row's realised outcome (classification: 0 or 1; regression: the value).
        #[arg(long)]
        outcome: String,
        /// Settings of the online rules (hedge, boa, mlpol, ewa); default: the ensemble's own.
        #[command(flatten)]
        online: OnlineArgs,
        /// The feature holding each period's return, for the regime method (default: the
        /// ensemble's own regime configuration; without one the method is left out; "none" to disable).
        #[arg(long)]
        regime_feature: Option<String>,
        /// Where backtest.json and backtest.svg go (default: <home>/reports/<ensemble>).
        #[arg(long)]
        report_dir: Option<PathBuf>,
        /// Print {"task", "rows", "methods", "oracles", "regimes"} as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Tracked metrics of an ensemble (restored from the home's state database): per member, per
    /// regime, windows, ranking.
    Metrics {
        ensemble: String,
        #[arg(long)]
        json: bool,
    },
    /// Show which ONNX Runtime library is loaded, and its build.
    Runtime,
    /// Serve the home over HTTP: the REST API (/api/v1/ml), the Open Inference Protocol (/v2) and
    /// /openapi.json, until SIGTERM or SIGINT (then in-flight requests finish and state is flushed).
    Serve(ServeArgs),
    /// Alert rules: check a rule file, or list a running server's rules, active alerts and events.
    #[command(subcommand)]
    Alerts(AlertsCommand),
    /// A live view of a running server: each ensemble's throughput, latency percentiles, errors and
    /// accuracy, each member's weight, accuracy, calls, breaker and replicas, alerts, experiments.
    Top {
        #[command(flatten)]
        target: TargetArgs,
        /// Seconds between frames (rates and percentiles are over this interval).
        #[arg(long, default_value_t = 2.0)]
        interval: f64,
        /// Stop after this many frames (default: until interrupted).
        #[arg(long)]
        frames: Option<u32>,
    },
    /// Walk forward through a CSV file: predict each row, then record its outcome.
    Replay {
        ensemble: String,
        #[arg(long)]
        data: PathBuf,
        /// The column with each row's realised outcome.
        #[arg(long)]
        outcome: String,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// A running server to read.
#[derive(clap::Args, Debug)]
struct TargetArgs {
    /// Its address (plain http).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    server: String,
    /// The environment variable holding a token with the predict scope (never a flag: it would show
    /// in the process list).
    #[arg(long, default_value = "QUORUM_TOKEN")]
    token_env: String,
}

#[derive(Subcommand, Debug)]
enum AlertsCommand {
    /// Parse a rule file (the story's YAML form) and print what each rule means.
    Check { file: PathBuf },
    /// A running server's rules, alerts pending or firing, and latest events.
    List {
        #[command(flatten)]
        target: TargetArgs,
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// Address to listen on (a non-loopback address needs tokens or --insecure).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Bearer tokens: lines `predict TOKEN` / `admin TOKEN`, `#` comments (also QUORUM_ADMIN_TOKENS,
    /// QUORUM_PREDICT_TOKENS).
    #[arg(long)]
    tokens: Option<PathBuf>,
    /// A quorum.toml with the server's and the engine's settings (flags override it).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Serve without authentication on a non-loopback address.
    #[arg(long)]
    insecure: bool,
    /// HTTPS: certificate chain (PEM) ...
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// ... and its private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// error, warn, info, debug (a line per request) or trace.
    #[arg(long)]
    log_level: Option<String>,
    /// text or json.
    #[arg(long)]
    log_format: Option<String>,
    /// Alert rules in the story's YAML form (default: the story's four).
    #[arg(long)]
    alerts: Option<PathBuf>,
    /// An http:// URL that receives alert notifications in Alertmanager's webhook format (repeatable).
    #[arg(long)]
    alert_webhook: Vec<String>,
    /// Print the effective settings (TOML) and exit.
    #[arg(long)]
    print_config: bool,
}

/// `models register`'s options for a model served by another server (boxed: they are most of the
/// command's size).
#[derive(Args, Debug)]
struct RemoteArgs {
    /// A model served by another server over the Open Inference Protocol v2 (Triton, KServe,
    /// MLServer, quorum serve): http(s)://host:port/v2/models/MODEL[/versions/V]. Its metadata is
    /// read and checked against --features and --output, and it is probed on a row of zeros.
    #[arg(long, conflicts_with = "inputs")]
    remote: Option<String>,
    /// The environment variable holding the remote server's bearer token (the name is stored,
    /// the token never is).
    #[arg(long, requires = "remote")]
    remote_token_env: Option<String>,
    /// Send a remote request not answered by the model's recent 95th percentile of answer times
    /// a second time, on another connection (or to --remote-hedge-url); the first answer wins.
    #[arg(long, requires = "remote")]
    remote_hedge: bool,
    /// A second server of the same model (same URL form as --remote; probed at registration):
    /// where hedged requests go, and where a request that failed outright is tried again.
    /// Implies --remote-hedge.
    #[arg(long, requires = "remote")]
    remote_hedge_url: Option<String>,
}

#[derive(Subcommand, Debug)]
enum ModelsCommand {
    /// Copy a model into the registry as a new version, or register one served by another server
    /// (--remote).
    Register {
        name: String,
        /// The ONNX file.
        #[arg(long, required_unless_present = "remote", conflicts_with = "remote")]
        file: Option<PathBuf>,
        #[command(flatten)]
        remote: Box<RemoteArgs>,
        /// The model's input features, in input order: f1,f2,...
        #[arg(long, value_delimiter = ',')]
        features: Vec<String>,
        /// Output holding the prediction, with its column or class: probabilities:1, output_probability:up
        /// (default: probabilities:1 when the model has it, else its only ZipMap or float output)
        #[arg(long)]
        output: Option<String>,
        /// Which features feed which input, for a model with several inputs: 'x1=a,b;x2=c,d'
        /// (default: inputs named as the features, one feature each)
        #[arg(long)]
        inputs: Option<String>,
        /// technical, fundamental, sentiment or other.
        #[arg(long, default_value = "other")]
        kind: String,
        /// classification or regression.
        #[arg(long, default_value = "classification")]
        task: String,
        /// Version number (default: the next one).
        #[arg(long, value_parser = version_arg)]
        version: Option<u32>,
        /// Make this version the default.
        #[arg(long)]
        set_default: bool,
        /// The largest model file accepted, in bytes (default 2 GiB, protobuf's own limit).
        #[arg(long, default_value_t = quorum::registry::DEFAULT_MAX_MODEL_BYTES)]
        max_bytes: u64,
    },
    /// List models and their versions.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show a model's metadata (the default version unless --version) and its `executor`: `native`,
    /// or `onnxruntime` with the reason, decided as an engine decides at load, or `remote` with its URL.
    Show {
        name: String,
        #[arg(long, value_parser = version_arg)]
        version: Option<u32>,
        /// Accepted for symmetry with `models list --json`: the output is always JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make a version the default.
    SetDefault {
        name: String,
        #[arg(value_parser = version_arg)]
        version: u32,
    },
    /// Remove a model, or one version of it (refused while ensembles use it, unless --force).
    Remove {
        name: String,
        #[arg(long, value_parser = version_arg)]
        version: Option<u32>,
        /// Remove it even though ensembles use it (they then fail until changed).
        #[arg(long)]
        force: bool,
    },
}

/// `--eta`, `--alpha`, `--floor` and `--strategy-options` (a flag wins over the same key in the JSON).
#[derive(Args, Debug, Default)]
struct OnlineArgs {
    /// Online rules: a fixed learning rate for hedge and ewa (default: adaptive).
    #[arg(long)]
    eta: Option<f64>,
    /// Online rules: hedge's Fixed-Share mixing rate, in [0, 1] (default 0.01).
    #[arg(long)]
    alpha: Option<f64>,
    /// Online rules: the least weight served to a member, in [0, 1) (default 0.01; 0 = opera's rules exactly).
    #[arg(long)]
    floor: Option<f64>,
    /// Online rules: a JSON object of settings, e.g. '{"floor": 0, "gradient": false}'
    /// (keys: eta, alpha, floor, loss_decay, gradient).
    #[arg(long)]
    strategy_options: Option<String>,
}

impl OnlineArgs {
    fn apply(&self, base: quorum::online::OnlineOptions) -> Result<quorum::online::OnlineOptions> {
        let mut options = match &self.strategy_options {
            Some(json) => base.merged(json)?,
            None => base,
        };
        options.eta = self.eta.or(options.eta);
        options.alpha = self.alpha.unwrap_or(options.alpha);
        options.floor = self.floor.unwrap_or(options.floor);
        options.validate()?;
        Ok(options)
    }
}

#[derive(Subcommand, Debug)]
enum EnsembleCommand {
    /// Create an ensemble (or a new version of one).
    Create {
        name: String,
        /// Members: model or model@version, comma-separated.
        #[arg(long, value_delimiter = ',')]
        members: Vec<String>,
        /// One weight per member (default: equal).
        #[arg(long, value_delimiter = ',')]
        weights: Option<Vec<f32>>,
        /// soft-vote, majority, hedge, boa, mlpol, ewa, stacking or blending.
        #[arg(long, default_value = "soft-vote")]
        strategy: String,
        #[command(flatten)]
        online: Box<OnlineArgs>,
        /// Detect volatility regimes from this return feature (e.g. ret_1d).
        #[arg(long)]
        regime_feature: Option<String>,
        /// A strategy per regime: high=majority,low=hedge (needs --regime-feature).
        #[arg(long, value_delimiter = ',')]
        regime_strategy: Vec<String>,
        /// Members that must answer (default: a majority).
        #[arg(long)]
        min_members: Option<usize>,
        /// Replace NaN/±Inf features with this value instead of refusing the request.
        #[arg(long)]
        impute: Option<f32>,
        /// Save the new version without making it active (a candidate for `quorum experiment start`).
        #[arg(long)]
        inactive: bool,
    },
    /// List ensembles.
    List,
    /// Show an ensemble's latest configuration and its `fusion`: whether its members share one
    /// ONNX Runtime session, which do, the opsets they were lifted to, and why any runs on its own.
    Show { name: String },
}

#[derive(Subcommand, Debug)]
enum ExperimentCommand {
    /// Start an experiment: the control stays (or becomes) the active version, the treatment gets
    /// the first step's share of traffic.
    Start {
        name: String,
        #[arg(long)]
        ensemble: String,
        /// The ensemble version serving now.
        #[arg(long)]
        control: u32,
        /// The candidate ensemble version.
        #[arg(long)]
        treatment: u32,
        /// The treatment's traffic share per step, in percent.
        #[arg(long, value_delimiter = ',', default_value = "5,25,50,100")]
        steps: Vec<f64>,
        /// log_loss, brier, accuracy, squared_error, absolute_error or business (default: log_loss
        /// for classification, squared_error for regression).
        #[arg(long)]
        metric: Option<String>,
        /// The test's error rate, valid at every look.
        #[arg(long, default_value_t = 0.05)]
        alpha: f64,
        /// Treatment outcomes each step needs before the next.
        #[arg(long, default_value_t = 200)]
        min_outcomes: u64,
        /// Outcomes (both arms) after which it concludes "no difference".
        #[arg(long, default_value_t = 100_000)]
        max_outcomes: u64,
        /// Promote at the last step when the treatment is not worse by more than this.
        #[arg(long)]
        non_inferiority_margin: Option<f64>,
        /// Guardrails and everything else as an ExperimentConfig JSON document (flags override it).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Arms, counts, the metric with its confidence sequence, p-value, step and decisions.
    Status {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Route every request to the control until `resume`.
    Pause { name: String },
    /// Continue a paused experiment.
    Resume { name: String },
    /// End an experiment; the control stays the active version.
    Stop {
        name: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Every experiment in the home.
    List {
        #[arg(long)]
        json: bool,
    },
}

/// The largest features document read from a file or stdin.
const MAX_FEATURES_BYTES: u64 = 1 << 20;

/// The `--features` argument's JSON: the text itself, `@path` for a file's, or `-` for stdin's
/// (at most 1 MiB either way).
fn features_text(arg: &str) -> Result<String> {
    use std::io::Read;
    let (what, reader): (String, Box<dyn Read>) = if arg == "-" {
        ("--features from stdin".into(), Box::new(std::io::stdin().lock()))
    } else if let Some(path) = arg.strip_prefix('@') {
        let file = std::fs::File::open(path).map_err(|e| Error::io(format!("reading --features file {path}"), e))?;
        (format!("--features file {path}"), Box::new(file))
    } else {
        return Ok(arg.to_string());
    };
    let mut bytes = Vec::new();
    reader.take(MAX_FEATURES_BYTES + 1).read_to_end(&mut bytes).map_err(|e| Error::io(format!("reading {what}"), e))?;
    if bytes.len() as u64 > MAX_FEATURES_BYTES {
        return Err(Error::TooLarge { what, size: "more".into(), limit: MAX_FEATURES_BYTES });
    }
    String::from_utf8(bytes).map_err(|_| Error::InvalidInput(format!("{what} is not UTF-8 text")))
}

/// A version on the command line: the library's rule (1 to 2147483647), checked by clap.
fn version_arg(text: &str) -> std::result::Result<u32, String> {
    let value: f64 = text.trim().parse().map_err(|_| format!("{text:?} is not a whole number"))?;
    quorum::check_version("version", value).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(2) } else { ExitCode::SUCCESS };
        }
    };
    match Error::guard(|| run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_closed_stdout(&e) => ExitCode::from(141),
        Err(e) => {
            eprintln!("error[{}]: {e}", e.code());
            ExitCode::FAILURE
        }
    }
}

/// The engine of an existing home: commands that only use what a home holds never make one, so
/// a mistyped `--home` is an error rather than a new empty home.
fn engine(home: &std::path::Path) -> Result<InferenceEngine> {
    if !home.is_dir() {
        return Err(Error::NotFound {
            what: "quorum home",
            name: format!("{} (register a model or create an ensemble there first, or fix --home)", home.display()),
        });
    }
    let builder = InferenceEngine::builder(home);
    match STATE.get().and_then(Option::as_ref) {
        Some(url) => builder.with_state(url.clone()).build(),
        None => builder.build(),
    }
}

/// What a command's output error says when its reader went away: `main` then exits quietly.
const STDOUT_CLOSED: &str = "writing to stdout";

fn emit_line(args: std::fmt::Arguments<'_>) -> Result<()> {
    use std::io::Write;
    writeln!(std::io::stdout().lock(), "{args}").map_err(|e| Error::io(STDOUT_CLOSED, e))
}

/// Whether `error` is the reader of stdout going away.
fn is_closed_stdout(error: &Error) -> bool {
    matches!(error, Error::Io { context, source } if context == STDOUT_CLOSED && source.kind() == std::io::ErrorKind::BrokenPipe)
}

/// The engine of a command that adds to the home (`models register`, `ensemble create`): it may
/// make the home, and writes no learning state of its own, so that it works beside a `quorum serve`
/// that holds the home's SQLite state; with a PostgreSQL state it joins it, to announce the change
/// to every replica.
fn writing_engine(home: &std::path::Path) -> Result<InferenceEngine> {
    std::fs::create_dir_all(home).map_err(|e| Error::io(format!("creating {}", home.display()), e))?;
    let builder = InferenceEngine::builder(home);
    match STATE.get().and_then(Option::as_ref) {
        Some(url @ StateUrl::Postgres(_)) => builder.with_state(url.clone()).build(),
        _ => builder.without_persistence().build(),
    }
}

/// Prints `text`; `Ok(false)` when the reader went away (`| head`), which is not an error.
fn print_or_stop(text: &str) -> Result<bool> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(Error::io("printing", e)),
    }
}

fn print_json(value: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::json("output", e))?;
    out!("{text}");
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    let home_given = cli.home.is_some();
    let state = cli.state.as_deref().map(StateUrl::parse).transpose()?;
    let _ = STATE.set(state);
    let home = cli.home.unwrap_or_else(|| PathBuf::from("./quorum-home"));
    if !matches!(cli.command, Command::Serve(_)) {
        // What the library repairs on its own (a killed write's leftovers) is said on stderr; the
        // server sets its own logging from its configuration.
        quorum_server::init_logging(&quorum_server::config::LogConfig { level: "warn".into(), format: "text".into() });
    }
    match cli.command {
        Command::Models(cmd) => models(&home, cmd),
        Command::Ensemble(cmd) => ensembles(&home, cmd),
        Command::Experiment(cmd) => experiments(&home, cmd),
        Command::Predict { ensemble, features, routing_key } => {
            let features = Features::from_json(&features_text(&features)?)?;
            let prediction =
                engine(&home)?.ensemble(&ensemble)?.predict_routed(&features, routing_key.as_deref(), None)?;
            print_json(&prediction)
        }
        Command::Backtest { ensemble, data, outcome, online, regime_feature, report_dir, json } => {
            let engine = engine(&home)?;
            let mut options = quorum_backtest::BacktestOptions::new(outcome);
            options.online = online.apply(engine.ensemble(&ensemble)?.config().online)?;
            match regime_feature.as_deref() {
                Some("none") => options.without_regimes = true,
                Some(feature) => options.regime = Some(quorum::regime::RegimeOptions::new(feature)),
                None => {}
            }
            let report = quorum_backtest::backtest(&engine, &ensemble, &data, &options)?;
            let dir = report_dir.unwrap_or_else(|| home.join("reports").join(&ensemble));
            let (json_path, svg_path) = report.write(&dir)?;
            if json {
                print_json(&report.summary())
            } else {
                out!("walk-forward backtest of {} through ensemble {ensemble:?}\n", data.display());
                out!("{report}");
                out!("report: {}\nchart:  {}", json_path.display(), svg_path.display());
                Ok(())
            }
        }
        Command::Metrics { ensemble, json } => {
            let engine = engine(&home)?;
            engine.ensemble(&ensemble)?;
            let metrics = engine.metrics(&ensemble)?;
            if json {
                return print_json(&metrics);
            }
            let pct = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.4}"));
            out!(
                "ensemble {}@{}  (all time; win_acc: accuracy over the count window)",
                metrics.ensemble,
                metrics.version
            );
            out!(
                "{:<14} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
                "predictor",
                "count",
                "accuracy",
                "f1",
                "log_loss",
                "brier",
                "win_acc"
            );
            let rows =
                std::iter::once(("ensemble".to_string(), metrics.metrics)).chain(metrics.members.iter().cloned());
            for (name, m) in rows {
                let a = m.all_time;
                out!(
                    "{name:<14} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
                    a.count,
                    pct(a.accuracy),
                    pct(a.f1_score),
                    pct(a.log_loss),
                    pct(a.brier),
                    pct(m.window.accuracy)
                );
            }
            out!("ranking (best first, by windowed loss): {}", metrics.ranking.join(", "));
            for (regime, group) in &metrics.regimes {
                let all = group.metrics.all_time;
                out!("regime {regime}: {} outcomes, accuracy {}", all.count, pct(all.accuracy));
            }
            Ok(())
        }
        Command::Optimize {
            model,
            data,
            outcome,
            accuracy_threshold,
            target_latency_ms,
            method,
            provider,
            graph_level,
            batch_sizes,
            json,
        } => {
            let provider = match provider.as_str() {
                "cpu" => quorum::ExecutionProvider::Cpu,
                "cuda" => quorum::ExecutionProvider::Cuda { device_id: 0 },
                "tensorrt" => {
                    quorum::ExecutionProvider::TensorRt { device_id: 0, fp16: true, int8: false, engine_cache: None }
                }
                other => return Err(Error::Config(format!("--provider {other:?}: cpu, cuda or tensorrt"))),
            };
            let engine = engine(&home)?;
            let spec: MemberSpec = model.parse()?;
            let methods = method.iter().map(|m| m.parse()).collect::<Result<Vec<quorum::optimizer::Method>>>()?;
            let target = target_latency_ms
                .map(|ms| {
                    std::time::Duration::try_from_secs_f64(ms / 1e3)
                        .map_err(|_| Error::Config(format!("--target-latency-ms {ms} is not a duration")))
                })
                .transpose()?;
            let options = quorum::OptimizeOptions {
                accuracy_threshold,
                target_latency: target,
                methods: (!methods.is_empty()).then_some(methods),
                provider,
                graph_level: graph_level.parse()?,
                batch_sizes: quorum::OptimizeOptions::parse_batch_sizes(&batch_sizes)?,
                ..Default::default()
            };
            let report =
                quorum::Optimizer::new(&engine).optimize(&spec.model, spec.version, &data, &outcome, &options)?;
            if json {
                return print_json(&report);
            }
            let ms = |m: Option<f64>| m.map_or("-".into(), |v| format!("{v:.4}"));
            let pct = |a: Option<f64>| a.map_or("-".into(), |v| format!("{:.2}%", v * 100.0));
            out!(
                "{}@{}: accuracy {}, p50 at batch 1 {} ms, {} bytes",
                report.model,
                report.version,
                pct(report.original.accuracy),
                ms(report.original.p50_ms(1)),
                report.original.size_bytes
            );
            out!(
                "{:<26} {:>9} {:>9} {:>11} {:>11} {:>10}  decision",
                "candidate",
                "accuracy",
                "agreement",
                "p50 b=1 ms",
                "p50 b=64 ms",
                "bytes"
            );
            for c in &report.candidates {
                out!(
                    "{:<26} {:>9} {:>9} {:>11} {:>11} {:>10}  {}",
                    c.method.as_str(),
                    pct(c.accuracy),
                    pct(c.agreement),
                    ms(c.latency_ms.get(&1).copied()),
                    ms(c.latency_ms.get(&64).copied()),
                    c.size_bytes,
                    if c.accepted { "accepted".to_string() } else { c.reason.clone().unwrap_or_default() }
                );
            }
            match &report.chosen {
                Some(chosen) if !chosen.registered => out!(
                    "chosen: {} for {}@{} ({:.1}% faster); {}",
                    chosen.method.as_str(),
                    report.model,
                    chosen.version,
                    report.performance_improvement.latency_reduction * 100.0,
                    chosen.note.as_deref().unwrap_or("")
                ),
                Some(chosen) => out!(
                    "chosen: {} registered as {}@{} ({:.1}% faster; default version unchanged)",
                    chosen.method.as_str(),
                    report.model,
                    chosen.version,
                    report.performance_improvement.latency_reduction * 100.0
                ),
                None => out!("kept the original: no candidate was both faster and accurate enough"),
            }
            out!("deployment_ready: {}", report.deployment_ready);
            Ok(())
        }
        Command::Quantize { model, out, method, data, features, per_channel, json } => {
            let options = quorum::optimizer::QuantizeOptions {
                method: method.parse()?,
                per_channel,
                calibration: data.map(|data| (data, features)),
            };
            let bytes = std::fs::read(&model).map_err(|e| Error::io(format!("reading {}", model.display()), e))?;
            let runtime = quorum::Runtime::new(quorum::RuntimeOptions::default())?;
            let rewritten = quorum::optimizer::quantize_model(&runtime, &bytes, &options)?;
            std::fs::write(&out, &rewritten.bytes).map_err(|e| Error::io(format!("writing {}", out.display()), e))?;
            if json {
                return print_json(
                    &serde_json::json!({"out": out, "bytes": rewritten.bytes.len(), "nodes": rewritten.nodes}),
                );
            }
            for n in &rewritten.nodes {
                let what = if n.rewritten { "rewritten".to_string() } else { n.reason.clone().unwrap_or_default() };
                out!("{:<28} {:<24} {what}", n.node, n.op_type);
            }
            out!("wrote {} ({} bytes)", out.display(), rewritten.bytes.len());
            Ok(())
        }
        Command::Benchmark { model, data, outcome, json } => {
            let engine = engine(&home)?;
            let spec: MemberSpec = model.parse()?;
            let bench =
                quorum::Optimizer::new(&engine).benchmark(&spec.model, spec.version, &data, outcome.as_deref())?;
            if json {
                return print_json(&bench);
            }
            out!(
                "{model}: {} bytes{}",
                bench.size_bytes,
                bench.accuracy.map(|a| format!(", accuracy {:.2}%", a * 100.0)).unwrap_or_default()
            );
            out!("{:>6} {:>10} {:>10} {:>10} {:>14}", "batch", "p50 ms", "p95 ms", "p99 ms", "rows/s");
            for l in &bench.latency {
                out!("{:>6} {:>10.4} {:>10.4} {:>10.4} {:>14.0}", l.batch, l.p50_ms, l.p95_ms, l.p99_ms, l.throughput);
            }
            Ok(())
        }
        Command::Serve(args) => serve(home, home_given, args),
        Command::Alerts(AlertsCommand::Check { file }) => watch::check_rules(&file),
        Command::Alerts(AlertsCommand::List { target, json }) => {
            watch::list_alerts(&watch::Target::new(target.server, &target.token_env), json)
        }
        Command::Top { target, interval, frames } => {
            // Every frame is two requests: no faster than ten a second.
            if interval.is_nan() || interval < 0.1 {
                return Err(Error::InvalidInput(format!("--interval {interval}: at least 0.1 seconds")));
            }
            let interval = quorum::units::duration_from_ms("--interval", interval * 1e3)?;
            watch::top(&watch::Target::new(target.server, &target.token_env), interval, frames)
        }
        Command::Runtime => {
            let runtime = quorum::Runtime::new(quorum::RuntimeOptions::default())?;
            let path = quorum::Runtime::library_path().map(|p| p.display().to_string()).unwrap_or_default();
            out!("library: {path}\nbuild: {}\noptions: {:?}", runtime.build_info(), runtime.options());
            Ok(())
        }
        Command::Replay { ensemble, data, outcome, json } => {
            let engine = engine(&home)?;
            // The experiment the replay feeds, if the ensemble runs one (loading it takes it up).
            let experiment = engine.ensemble(&ensemble)?.experiment().map(|e| e.name);
            let report = replay::replay(&engine, &ensemble, &data, &ReplayOptions { outcome })?;
            if json {
                print_json(&report)
            } else {
                out!("replay of {} through ensemble {ensemble:?}\n", data.display());
                out!("{report}");
                if let Some(name) = experiment {
                    let e = engine.experiment_status(&name)?;
                    let last = e.decisions.last().map_or(String::new(), |d| format!(": {}", d.reason));
                    out!("experiment {name}: {}{last}", e.state.as_str());
                }
                Ok(())
            }
        }
    }
}

fn experiments(home: &std::path::Path, cmd: ExperimentCommand) -> Result<()> {
    let engine = engine(home)?;
    let status = match cmd {
        ExperimentCommand::Start {
            name,
            ensemble,
            control,
            treatment,
            steps,
            metric,
            alpha,
            min_outcomes,
            max_outcomes,
            non_inferiority_margin,
            config,
        } => {
            let mut c = match config {
                Some(path) => {
                    let text = std::fs::read_to_string(&path)
                        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
                    ExperimentConfig::from_json(&text)?
                }
                None => ExperimentConfig::new(&name, &ensemble, control, treatment),
            };
            (c.name, c.ensemble, c.control, c.treatment) = (name, ensemble, control, treatment);
            (c.steps, c.alpha, c.min_outcomes_per_step, c.max_outcomes) = (steps, alpha, min_outcomes, max_outcomes);
            if let Some(metric) = metric {
                c.metric = Some(quorum::ExperimentMetric::parse(&metric)?);
            }
            if non_inferiority_margin.is_some() {
                c.non_inferiority_margin = non_inferiority_margin;
            }
            engine.start_experiment(c)?
        }
        ExperimentCommand::Status { name, json } => {
            let status = engine.experiment_status(&name)?;
            return if json { print_json(&status) } else { print_experiment(&status) };
        }
        ExperimentCommand::Pause { name } => engine.pause_experiment(&name)?,
        ExperimentCommand::Resume { name } => engine.resume_experiment(&name)?,
        ExperimentCommand::Stop { name, reason } => engine.stop_experiment(&name, &reason)?,
        ExperimentCommand::List { json } => {
            let list = engine.experiments()?;
            if json {
                return print_json(&list);
            }
            for e in list {
                out!(
                    "{}  {}  {} v{} vs v{}  step {}/{} ({}%)",
                    e.name,
                    e.state.as_str(),
                    e.ensemble,
                    e.arms.treatment.version,
                    e.arms.control.version,
                    e.step,
                    e.steps.len(),
                    e.split_percent
                );
            }
            return Ok(());
        }
    };
    out!("experiment {}: {}", status.name, status.state.as_str());
    Ok(())
}

/// `experiment status` for people.
fn print_experiment(s: &quorum::ExperimentStatus) -> Result<()> {
    out!("experiment {} on {}: {}", s.name, s.ensemble, s.state.as_str());
    out!("step {} of {:?} %: the treatment gets {}%", s.step, s.steps, s.split_percent);
    out!(
        "metric {} ({} is better), alpha {}",
        s.metric.as_str(),
        if s.higher_is_better { "higher" } else { "lower" },
        s.alpha
    );
    let number = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.5}"));
    out!("\n{:<10} {:>7} {:>7} {:>9} {:>10} {:>10}", "arm", "version", "share", "outcomes", "mean", "sd");
    for (arm, a) in [("control", &s.arms.control), ("treatment", &s.arms.treatment)] {
        out!(
            "{arm:<10} {:>7} {:>6}% {:>9} {:>10} {:>10}",
            a.version,
            a.share_percent,
            a.outcomes,
            number(a.mean),
            number(a.sd)
        );
    }
    match (s.estimate, s.confidence_sequence) {
        (Some(estimate), Some([lower, upper])) => out!(
            "\ntreatment − control {estimate:+.5}, {:.0}% confidence sequence [{lower:+.5}, {upper:+.5}], always-valid p = {:.4}",
            100.0 * (1.0 - s.alpha),
            s.p_value
        ),
        _ => out!("\nthe test needs {} outcomes per arm", quorum::experiment::msprt::MIN_ARM_OUTCOMES),
    }
    out!("\ndecisions:");
    for d in &s.decisions {
        out!("  {}  {:<13} {}", d.at, d.action.as_str(), d.reason);
    }
    Ok(())
}

/// `quorum serve`: the configuration file (if any), then the flags over it.
fn serve(home: PathBuf, home_given: bool, args: ServeArgs) -> Result<()> {
    let mut config = match &args.config {
        Some(path) => quorum_server::ServerConfig::from_file(path)?,
        None => quorum_server::ServerConfig { home: home.clone(), ..Default::default() },
    };
    if home_given || args.config.is_none() {
        config.home = home;
    }
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(url) = STATE.get().and_then(Option::as_ref) {
        config.set_state(url);
    }
    if args.tokens.is_some() {
        config.tokens = args.tokens;
    }
    config.insecure |= args.insecure;
    if let (Some(cert), Some(key)) = (args.tls_cert, args.tls_key) {
        config.tls = Some(quorum_server::TlsConfig { cert, key });
    }
    if let Some(level) = args.log_level {
        config.log.level = level;
    }
    if let Some(format) = args.log_format {
        config.log.format = format;
    }
    if args.alerts.is_some() {
        config.alerts.rules = args.alerts;
    }
    config.alerts.webhooks.extend(args.alert_webhook);
    config.validate()?;
    if args.print_config {
        use std::io::Write;
        // A reader that stops early (`| head`) is not an error.
        return match std::io::stdout().write_all(config.to_toml()?.as_bytes()) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Error::io("printing the configuration", e)),
            _ => Ok(()),
        };
    }
    quorum_server::init_logging(&config.log);
    quorum_server::run(config)
}

fn models(home: &std::path::Path, cmd: ModelsCommand) -> Result<()> {
    match cmd {
        ModelsCommand::Register {
            name,
            file,
            remote,
            features,
            output,
            inputs,
            kind,
            task,
            version,
            set_default,
            max_bytes,
        } => {
            let features: Vec<String> =
                features.into_iter().map(|f| f.trim().to_string()).filter(|f| !f.is_empty()).collect();
            let RemoteArgs { remote, remote_token_env, remote_hedge, remote_hedge_url } = *remote;
            let registration = match (file, remote) {
                (_, Some(url)) => ModelRegistration::remote(&name, url, remote_token_env, features),
                (Some(file), None) => ModelRegistration::new(&name, file, features),
                (None, None) => return Err(quorum::Error::Config("give --file or --remote".into())),
            };
            let mut registration = registration;
            if remote_hedge || remote_hedge_url.is_some() {
                registration = registration.with_hedge(remote_hedge_url);
            }
            let mut registration = registration
                .with_max_bytes(max_bytes)
                .with_kind(kind.parse::<ModelKind>()?)
                .with_task(task.parse::<Task>()?);
            if let Some(output) = output {
                registration = registration.with_output(output.parse::<OutputSpec>()?);
            }
            if let Some(inputs) = inputs {
                registration = registration.with_inputs(inputs.parse::<quorum::InputMap>()?);
            }
            if let Some(v) = version {
                registration = registration.with_version(v);
            }
            let engine = writing_engine(home)?;
            let meta = engine.register_model(registration)?;
            if set_default {
                engine.registry().set_default(&meta.name, meta.version)?;
            }
            out!(
                "registered {}@{} ({} features, sha256 {})",
                meta.name,
                meta.version,
                meta.features.len(),
                &meta.sha256[..12]
            );
            for key in ["exported", "remote"] {
                if let Some(note) = meta.metadata.get(key).and_then(|v| v.as_str()) {
                    out!("{note}");
                }
            }
            if let Some(n) = meta.max_batch {
                let fill = if n > 1 { ", a short last one filled up" } else { "" };
                out!("it takes {n} row(s) per call: batches are split into calls of that size{fill}");
            }
            Ok(())
        }
        ModelsCommand::List { json } => {
            let list = Registry::open(home)?.list()?;
            if json {
                return print_json(&list);
            }
            out!("{:<20} {:<12} {:<15} {:>8}  versions", "name", "kind", "task", "default");
            for m in list {
                let versions: Vec<String> = m.versions.iter().map(u32::to_string).collect();
                out!(
                    "{:<20} {:<12} {:<15} {:>8}  {}",
                    m.name,
                    format!("{:?}", m.kind).to_lowercase(),
                    format!("{:?}", m.task).to_lowercase(),
                    m.default_version,
                    versions.join(",")
                );
            }
            Ok(())
        }
        ModelsCommand::Show { name, version, json: _ } => {
            let registry = Registry::open(home)?;
            let version = match version {
                Some(v) => v,
                None => registry.default_version(&name)?,
            };
            let meta = registry.get(&name, version)?;
            // Which executor an engine would run it on, decided as at load (plan + probe rows).
            let executor = match &meta.remote {
                Some(remote) => quorum::native::ExecutorInfo::remote(&remote.url),
                None => {
                    let runtime = quorum::Runtime::new(quorum::RuntimeOptions::default())?;
                    let bytes = registry.read_verified(&meta)?;
                    match quorum::native::verified(
                        &runtime,
                        &meta.name,
                        &bytes,
                        &meta.output.name,
                        meta.features.len(),
                        None,
                    ) {
                        Ok(_) => quorum::native::ExecutorInfo::native(),
                        Err(why) => quorum::native::ExecutorInfo::onnxruntime(why),
                    }
                }
            };
            let mut document = serde_json::to_value(&meta).map_err(|e| quorum::Error::json("model metadata", e))?;
            document["executor"] = serde_json::to_value(&executor).map_err(|e| quorum::Error::json("executor", e))?;
            print_json(&document)
        }
        ModelsCommand::SetDefault { name, version } => Registry::open(home)?.set_default(&name, version),
        ModelsCommand::Remove { name, version, force } => {
            quorum::EnsembleStore::open(home)?.remove_model(&Registry::open(home)?, &name, version, force)?;
            match version {
                Some(v) => out!("removed {name}@{v}"),
                None => out!("removed {name}"),
            }
            Ok(())
        }
    }
}

fn ensembles(home: &std::path::Path, cmd: EnsembleCommand) -> Result<()> {
    match cmd {
        EnsembleCommand::Create {
            name,
            members,
            weights,
            strategy,
            min_members,
            impute,
            regime_feature,
            regime_strategy,
            inactive,
            online,
        } => {
            let members = members.iter().map(|m| m.trim().parse::<MemberSpec>()).collect::<Result<Vec<_>>>()?;
            let mut config = EnsembleConfig::new(name, members)
                .with_strategy(strategy.parse::<StrategyKind>()?)
                .with_online(online.apply(quorum::online::OnlineOptions::default())?);
            if let Some(w) = weights {
                config = config.with_weights(w);
            }
            if let Some(min) = min_members {
                config = config.with_min_members(min);
            }
            if let Some(feature) = regime_feature {
                let mut strategies = std::collections::BTreeMap::new();
                for pair in regime_strategy {
                    let (regime, strategy) = pair.split_once('=').ok_or_else(|| {
                        Error::Config(format!(
                            "--regime-strategy {pair:?}: expected REGIME=STRATEGY, e.g. high=majority"
                        ))
                    })?;
                    let regime: quorum::regime::Regime =
                        serde_json::from_value(serde_json::json!(regime)).map_err(|_| {
                            Error::Config(format!("unknown regime {regime:?}; expected low, normal or high"))
                        })?;
                    strategies.insert(regime, strategy.parse::<StrategyKind>()?);
                }
                let detector = quorum::regime::RegimeOptions::new(feature);
                config = config.with_regimes(quorum::adaptive::RegimeConfig { detector, strategies });
            } else if !regime_strategy.is_empty() {
                return Err(Error::Config("--regime-strategy needs --regime-feature".into()));
            }
            if let Some(value) = impute {
                config =
                    config.with_non_finite(quorum::NonFinitePolicy::Impute { value, per_feature: Default::default() });
            }
            let engine = writing_engine(home)?;
            let saved =
                if inactive { engine.create_ensemble_inactive(config)? } else { engine.create_ensemble(config)? };
            out!(
                "created ensemble {}@{} ({} members, {})",
                saved.name,
                saved.version,
                saved.members.len(),
                serde_json::to_value(saved.strategy).map(|v| v.as_str().unwrap_or("").to_string()).unwrap_or_default()
            );
            Ok(())
        }
        EnsembleCommand::List => {
            let store = quorum::EnsembleStore::open(home)?;
            for name in store.list()? {
                let config = store.get(&name)?;
                let members: Vec<String> =
                    config.members.iter().map(|m| format!("{}@{}", m.model, m.version)).collect();
                out!("{name}@{}  {}", config.version, members.join(","));
            }
            Ok(())
        }
        EnsembleCommand::Show { name } => {
            let config = quorum::EnsembleStore::open(home)?.get(&name)?;
            // Through text: float32 weights keep their shortest form (0.3, not 0.30000001192092896).
            let text = serde_json::to_string(&config).map_err(|e| Error::json("ensemble", e))?;
            let mut document: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| Error::json("ensemble", e))?;
            // How an engine would run it, decided as at load: which members share the fused
            // session, the opsets they were lifted to, and why any member runs on its own.
            let fusion = InferenceEngine::builder(home)
                .without_persistence()
                .build()
                .and_then(|engine| Ok(engine.ensemble(&name)?.fusion()))
                .map_err(|e| e.to_string())
                .and_then(|status| serde_json::to_value(status).map_err(|e| e.to_string()));
            document["fusion"] = fusion.unwrap_or_else(|error| serde_json::json!({ "error": error }));
            print_json(&document)
        }
    }
}
