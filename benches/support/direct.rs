//! The baseline for the `ensemble` bench: the three example models called directly through ort, with
//! the engine's session settings and the same arithmetic (soft vote, weights 0.4/0.4/0.2).

#![allow(dead_code)]

use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::TensorRef;
use quorum::{InferenceEngine, SoftVote, Strategy, Task};

use super::common;

pub const WEIGHTS: [f32; 3] = [0.4, 0.4, 0.2];
pub const MODELS: [&str; 3] = ["technical", "fundamental", "sentiment"];

/// The baseline: one ort session per model, built with the engine's settings, and hand-written glue.
pub struct Direct {
    sessions: Vec<Session>,
    /// Each model's features as positions in the schema row.
    indices: Vec<Vec<usize>>,
    inputs: Vec<Vec<f32>>,
    values: Vec<f32>,
}

impl Direct {
    pub fn new(engine: &InferenceEngine, schema: &[String]) -> Direct {
        let sessions = MODELS
            .iter()
            .map(|m| {
                Session::builder(engine.runtime().environment())
                    .unwrap()
                    .with_intra_threads(1)
                    .unwrap()
                    .with_inter_threads(1)
                    .unwrap()
                    .with_intra_op_spinning(false)
                    .unwrap()
                    .with_optimization_level(GraphOptimizationLevel::Level3)
                    .unwrap()
                    .commit_from_file(common::model_file(m))
                    .unwrap()
            })
            .collect();
        let indices = MODELS
            .iter()
            .map(|m| common::features_of(m).iter().map(|f| schema.iter().position(|s| s == f).unwrap()).collect())
            .collect();
        Direct { sessions, indices, inputs: vec![Vec::new(); 3], values: Vec::new() }
    }

    /// Runs every model on `rows` schema rows and combines them; returns (prediction, confidence) per row.
    pub fn predict(&mut self, dense: &[f32], rows: usize, out: &mut Vec<(f32, f32)>) {
        let width = dense.len() / rows;
        self.values.clear();
        self.values.resize(rows * 3, 0.0);
        for (m, session) in self.sessions.iter_mut().enumerate() {
            let input = &mut self.inputs[m];
            input.clear();
            for row in dense.chunks_exact(width) {
                input.extend(self.indices[m].iter().map(|&i| row[i]));
            }
            let tensor = TensorRef::from_array_view(([rows, self.indices[m].len()], input.as_slice())).unwrap();
            let outputs = session.run(ort::inputs![tensor]).unwrap();
            let (_, probabilities) = outputs["probabilities"].try_extract_tensor::<f32>().unwrap();
            for row in 0..rows {
                self.values[row * 3 + m] = probabilities[row * 2 + 1];
            }
        }
        out.clear();
        for row in 0..rows {
            let c = SoftVote.combine(Task::Classification, &self.values[row * 3..row * 3 + 3], &WEIGHTS);
            out.push((c.prediction, c.confidence));
        }
    }
}

pub fn rows(n: usize, schema: &[String]) -> Vec<f32> {
    let features = common::holdout_features(400);
    let mut values = Vec::with_capacity(n * schema.len());
    for i in 0..n {
        values.extend(schema.iter().map(|name| features[i % features.len()].get(name).unwrap()));
    }
    values
}
