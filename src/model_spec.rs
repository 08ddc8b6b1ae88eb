//! What a model is declared as, beside its file: what it looks at (`ModelKind`), what it predicts
//! (`Task`) and which output holds the prediction (`OutputSpec`). Low so that the registry and
//! the remote client share them without importing each other.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What a model looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// Looks at prices and volumes.
    Technical,
    /// Looks at the economy and companies' figures.
    Fundamental,
    /// Looks at sentiment: volatility indices, news, positioning.
    Sentiment,
    /// Anything else (the default).
    #[default]
    Other,
}

/// What a model predicts: a probability of the positive class, or a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// Predicts the probability of the positive class (the default).
    #[default]
    Classification,
    /// Predicts a value.
    Regression,
}

macro_rules! parse_snake_case_enum {
    ($ty:ty, $what:literal, [$($text:literal => $variant:expr),+]) => {
        impl FromStr for $ty {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                match s {
                    $($text => Ok($variant),)+
                    other => Err(Error::Config(format!(
                        concat!("unknown ", $what, " {:?}; expected one of: {}"),
                        other,
                        [$($text),+].join(", ")
                    ))),
                }
            }
        }
    };
}

parse_snake_case_enum!(ModelKind, "model kind", ["technical" => ModelKind::Technical, "fundamental" => ModelKind::Fundamental, "sentiment" => ModelKind::Sentiment, "other" => ModelKind::Other]);
parse_snake_case_enum!(Task, "task", ["classification" => Task::Classification, "regression" => Task::Regression]);

/// Which output of the model is its prediction, and which column of it.
///
/// sklearn-onnx classifiers emit `label` and `probabilities` `[N, classes]`; their prediction is
/// `probabilities:1`. A regressor's `variable` `[N, 1]` is `variable`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputSpec {
    /// The ONNX output's name.
    pub name: String,
    /// The column of a `[N, C]` output holding the prediction (0-based); `None` for a `[N]` or `[N, 1]` output.
    #[serde(default)]
    pub column: Option<usize>,
    /// The class label the column holds: given as `name:LABEL` (resolved to the column at
    /// registration from the model's ZipMap or classifier labels), or found there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

impl FromStr for OutputSpec {
    type Err = Error;
    /// Parses `name`, `name:column` or `name:label` (a class label, when not a number).
    fn from_str(s: &str) -> Result<Self> {
        let (name, column, label) = match s.rsplit_once(':') {
            Some((_, "")) => return Err(Error::Config(format!("output {s:?}: the class after ':' is empty"))),
            Some((name, class)) => match class.parse() {
                Ok(column) => (name, Some(column), None),
                Err(_) => (name, None, Some(class.to_string())),
            },
            None => (s, None, None),
        };
        if name.is_empty() {
            return Err(Error::Config(format!("output {s:?}: the output name is empty")));
        }
        Ok(OutputSpec { name: name.to_string(), column, label })
    }
}

impl fmt::Display for OutputSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.column, &self.label) {
            (Some(c), _) => write!(f, "{}:{c}", self.name),
            (None, Some(label)) => write!(f, "{}:{label}", self.name),
            (None, None) => f.write_str(&self.name),
        }
    }
}
