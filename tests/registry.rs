//! The on-disk registry: versions, defaults, removal, and crash safety.

mod common;

use quorum::{Error, ModelKind, ModelRegistration, Registry, Task, VersionSpec};

fn register(engine: &quorum::InferenceEngine, name: &str) -> quorum::ModelMetadata {
    engine.register_model(ModelRegistration::new(name, common::model_file(name), common::features_of(name))).unwrap()
}

#[test]
fn versions_defaults_latest_and_removal() {
    let home = tempfile::tempdir().unwrap();
    let engine = common::engine(home.path());
    let v1 = register(&engine, "sentiment");
    let v2 = register(&engine, "sentiment");
    assert_eq!((v1.version, v2.version), (1, 2));
    let reg = engine.registry();
    assert_eq!(reg.versions("sentiment").unwrap(), vec![1, 2]);
    assert_eq!(reg.latest("sentiment").unwrap().version, 2);
    assert_eq!(reg.default_version("sentiment").unwrap(), 2, "default is the latest until set");
    reg.set_default("sentiment", 1).unwrap();
    assert_eq!(reg.resolve("sentiment", VersionSpec::Default).unwrap().version, 1);
    assert!(matches!(reg.set_default("sentiment", 7), Err(Error::NotFound { .. })));

    let meta = reg.get("sentiment", 1).unwrap();
    assert_eq!(meta.features, common::features_of("sentiment"));
    assert_eq!(meta.output.to_string(), "probabilities:1");
    assert_eq!((meta.kind, meta.task), (ModelKind::Other, Task::Classification));
    assert_eq!(meta.sha256.len(), 64);
    assert!(meta.created_at.ends_with('Z'));
    assert!(home.path().join("models/sentiment/1/model.onnx").is_file(), "Triton-like layout");

    let explicit = engine
        .register_model(
            ModelRegistration::new("sentiment", common::model_file("sentiment"), common::features_of("sentiment"))
                .with_version(10),
        )
        .unwrap();
    assert_eq!(explicit.version, 10);
    let again = engine.register_model(
        ModelRegistration::new("sentiment", common::model_file("sentiment"), common::features_of("sentiment"))
            .with_version(10),
    );
    assert!(matches!(again, Err(Error::AlreadyExists { .. })));

    reg.remove("sentiment", Some(1)).unwrap();
    assert_eq!(reg.versions("sentiment").unwrap(), vec![2, 10]);
    assert_eq!(reg.default_version("sentiment").unwrap(), 10, "removing the default falls back to the latest");
    assert!(matches!(reg.remove("sentiment", Some(1)), Err(Error::NotFound { .. })));
    reg.remove("sentiment", None).unwrap();
    assert!(reg.list().unwrap().is_empty());
    assert!(matches!(reg.latest("sentiment"), Err(Error::NotFound { .. })));
}

#[test]
fn list_reports_every_model() {
    let home = tempfile::tempdir().unwrap();
    common::market_engine(home.path());
    let list = Registry::open(home.path()).unwrap().list().unwrap();
    let names: Vec<&str> = list.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["fundamental", "sentiment", "technical"]);
    assert_eq!(list[2].kind, ModelKind::Technical);
}

#[test]
fn a_half_written_version_is_invisible() {
    // What a crash mid-register leaves behind: a hidden staging directory with a partial artifact,
    // and a numbered directory without metadata. Neither is a version.
    let home = tempfile::tempdir().unwrap();
    let engine = common::engine(home.path());
    register(&engine, "sentiment");
    let model_dir = home.path().join("models/sentiment");
    std::fs::create_dir_all(model_dir.join(".tmp-2-999-0-0")).unwrap();
    std::fs::write(model_dir.join(".tmp-2-999-0-0/model.onnx"), b"partial").unwrap();
    std::fs::create_dir_all(model_dir.join("3")).unwrap();
    let reg = engine.registry();
    assert_eq!(reg.versions("sentiment").unwrap(), vec![1]);
    assert_eq!(reg.list().unwrap().len(), 1);
    assert_eq!(register(&engine, "sentiment").version, 4, "numbers of broken entries are not reused");
    let leftovers: Vec<_> = std::fs::read_dir(&model_dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().into_string().unwrap())
        .filter(|n| n.starts_with(".tmp") && n != ".tmp-2-999-0-0")
        .collect();
    assert!(leftovers.is_empty(), "a successful registration leaves no staging files: {leftovers:?}");
}

#[test]
fn concurrent_registrations_get_distinct_versions() {
    let home = tempfile::tempdir().unwrap();
    let engine = common::engine(home.path());
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let engine = engine.clone();
            std::thread::spawn(move || {
                engine.register_model(ModelRegistration::new(
                    "sentiment",
                    common::model_file("sentiment"),
                    common::features_of("sentiment"),
                ))
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let mut versions: Vec<u32> = results.into_iter().map(|r| r.unwrap().version).collect();
    versions.sort_unstable();
    assert_eq!(versions, vec![1, 2, 3, 4]);
    for v in versions {
        let meta = engine.registry().get("sentiment", v).unwrap();
        engine.registry().read_verified(&meta).unwrap();
    }
}

#[test]
fn metadata_edited_to_nonsense_is_an_error_not_a_panic() {
    let home = tempfile::tempdir().unwrap();
    let engine = common::engine(home.path());
    register(&engine, "sentiment");
    let path = home.path().join("models/sentiment/1/metadata.json");
    std::fs::write(&path, b"{\"name\": 5}").unwrap();
    assert!(matches!(engine.registry().get("sentiment", 1), Err(Error::Json { .. })));
    std::fs::write(&path, b"").unwrap();
    assert!(matches!(engine.registry().get("sentiment", 1), Err(Error::Json { .. })));
}
