//! Features in: named f32 values for one request, or a batch (row-major matrix or columns), and the
//! policy for NaN / ±Inf.
//!
//! An ensemble has a *schema*: the union of its members' features in first-seen order. A request is
//! turned into dense schema-ordered rows once; each member then gathers its own columns by index.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What to do with a NaN or infinite feature value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum NonFinitePolicy {
    /// Refuse the request with [`Error::NonFinite`] (the default: a NaN is almost always a data bug).
    #[default]
    Refuse,
    /// Replace the value: by the feature's entry in `per_feature`, else by `value`.
    Impute {
        /// The value that replaces a non-finite one when `per_feature` has no entry for the feature.
        value: f32,
        /// Replacement values by feature name.
        #[serde(default)]
        per_feature: BTreeMap<String, f32>,
    },
}

/// One request's named features.
///
/// Values are float32; names the ensemble does not use are ignored, and a missing one is an
/// [`Error::MissingFeature`].
///
/// ```
/// use quorum::Features;
///
/// # fn main() -> quorum::Result<()> {
/// # let home = tempfile::tempdir().map_err(|e| quorum::Error::io("tempdir", e))?;
/// # let engine = quorum::InferenceEngine::builder(home.path()).build()?;
/// # engine.register_model(quorum::ModelRegistration::new("sentiment", "examples/models/sentiment.onnx",
/// #     ["vix", "vix_chg_1d", "vix_chg_5d", "vix_rel_20d", "vix_zscore_60d"]))?;
/// # engine.create_ensemble(quorum::EnsembleConfig::new("market", ["sentiment".parse()?]))?;
/// let features = Features::new().with("vix", 13.5).with("vix_chg_1d", -0.02).with("vix_chg_5d", 0.05)
///     .with("vix_rel_20d", 0.01).with("vix_zscore_60d", -0.4)
///     .with("unused", 1.0);
/// assert_eq!(features.get("vix"), Some(13.5));
/// engine.predict("market", &features)?;
///
/// let missing = engine.predict("market", &Features::new().with("vix", 13.5)).unwrap_err();
/// assert_eq!(missing.code(), "missing_feature");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Features {
    values: HashMap<String, f32>,
}

impl Features {
    /// An empty request.
    pub fn new() -> Features {
        Features::default()
    }

    /// Adds or replaces one feature.
    #[must_use]
    pub fn with(mut self, name: impl Into<String>, value: f32) -> Features {
        self.values.insert(name.into(), value);
        self
    }

    /// Sets `name` to `value` (replacing an earlier value of the same name).
    pub fn insert(&mut self, name: impl Into<String>, value: f32) {
        self.values.insert(name.into(), value);
    }

    /// Builds from pairs; a name given twice is an error (it would silently hide one value).
    ///
    /// # Errors
    ///
    /// `invalid_input` for a name given twice.
    pub fn from_pairs<K: Into<String>>(pairs: impl IntoIterator<Item = (K, f32)>) -> Result<Features> {
        let mut values = HashMap::new();
        for (name, value) in pairs {
            let name = name.into();
            if values.insert(name.clone(), value).is_some() {
                return Err(Error::InvalidInput(format!("feature {name:?} is given twice")));
            }
        }
        Ok(Features { values })
    }

    /// Parses `{"name": number, ...}`. Numbers beyond f32's range are refused rather than rounded to infinity.
    ///
    /// # Errors
    /// `json` for malformed JSON; `invalid_input` for a value that is not a number or does not fit
    /// in f32, and for a name given twice (JSON parsers disagree on which copy wins).
    pub fn from_json(text: &str) -> Result<Features> {
        let entries: UniqueEntries = serde_json::from_str(text)
            .map_err(|e| Error::json("request features (expected {\"name\": number, ...})", e))?;
        if let Some(name) = entries.duplicate {
            return Err(Error::InvalidInput(format!("feature {name:?} is given twice")));
        }
        let mut values = HashMap::with_capacity(entries.values.len());
        for (name, value) in entries.values {
            let number = value
                .as_f64()
                .ok_or_else(|| Error::InvalidInput(format!("feature {name:?} is {value}, not a number")))?;
            let narrowed = number as f32;
            if !narrowed.is_finite() {
                return Err(Error::InvalidInput(format!("feature {name:?} = {number} does not fit in f32")));
            }
            values.insert(name, narrowed);
        }
        Ok(Features { values })
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<f32> {
        self.values.get(name).copied()
    }

    /// The features, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, f32)> {
        self.values.iter().map(|(k, v)| (k.as_str(), *v))
    }

    /// How many features are set.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether no feature is set.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

impl<K: Into<String>> FromIterator<(K, f32)> for Features {
    /// Later duplicates win; use [`Features::from_pairs`] to refuse them.
    fn from_iter<I: IntoIterator<Item = (K, f32)>>(iter: I) -> Self {
        Features { values: iter.into_iter().map(|(k, v)| (k.into(), v)).collect() }
    }
}

#[derive(Debug, Clone, Copy)]
enum Layout<'a> {
    RowMajor(&'a [f32]),
    Columnar,
}

/// Many rows at once. Each member of an ensemble runs once per batch, not once per row.
///
/// ```
/// use quorum::Batch;
///
/// # fn main() -> quorum::Result<()> {
/// # let home = tempfile::tempdir().map_err(|e| quorum::Error::io("tempdir", e))?;
/// # let engine = quorum::InferenceEngine::builder(home.path()).build()?;
/// # engine.register_model(quorum::ModelRegistration::new("sentiment", "examples/models/sentiment.onnx",
/// #     ["vix", "vix_chg_1d", "vix_chg_5d", "vix_rel_20d", "vix_zscore_60d"]))?;
/// # engine.create_ensemble(quorum::EnsembleConfig::new("market", ["sentiment".parse()?]))?;
/// let names = ["vix", "vix_chg_1d", "vix_chg_5d", "vix_rel_20d", "vix_zscore_60d"];
/// let rows = [13.5, -0.02, 0.05, 0.01, -0.4, //
///             24.0, 0.15, 0.30, 0.20, 2.1];
/// let answers = engine.predict_batch("market", &Batch::row_major(&names, &rows)?)?;
/// assert_eq!(answers.len(), 2);
///
/// // The same rows by column.
/// let vix = [13.5, 24.0];
/// let (d1, d5, rel, z) = ([-0.02, 0.15], [0.05, 0.30], [0.01, 0.20], [-0.4, 2.1]);
/// let columns = Batch::columnar(&[("vix", &vix[..]), ("vix_chg_1d", &d1[..]), ("vix_chg_5d", &d5[..]),
///                                  ("vix_rel_20d", &rel[..]), ("vix_zscore_60d", &z[..])])?;
/// assert_eq!(engine.predict_batch("market", &columns)?.predictions, answers.predictions);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Batch<'a> {
    names: Vec<String>,
    rows: usize,
    layout: Layout<'a>,
    columns: Vec<&'a [f32]>,
}

impl<'a> Batch<'a> {
    /// A row-major matrix: `values.len() == rows × feature_names.len()`.
    ///
    /// # Errors
    ///
    /// `invalid_input` when `values.len()` is not a multiple of the number of names, or a name is given twice.
    pub fn row_major<S: AsRef<str>>(feature_names: &[S], values: &'a [f32]) -> Result<Batch<'a>> {
        let names = unique_names(feature_names.iter().map(AsRef::as_ref))?;
        let width = names.len();
        if values.is_empty() {
            return Err(Error::InvalidInput("the batch is empty (no rows)".into()));
        }
        if !values.len().is_multiple_of(width) {
            return Err(Error::InvalidInput(format!(
                "wrong row width: {} values do not split into rows of {width} features",
                values.len()
            )));
        }
        Ok(Batch { names, rows: values.len() / width, layout: Layout::RowMajor(values), columns: Vec::new() })
    }

    /// Named columns of equal length.
    ///
    /// # Errors
    ///
    /// `invalid_input` when the columns' lengths differ or a name is given twice.
    pub fn columnar<S: AsRef<str>>(columns: &[(S, &'a [f32])]) -> Result<Batch<'a>> {
        let names = unique_names(columns.iter().map(|(n, _)| n.as_ref()))?;
        let rows = columns[0].1.len();
        if rows == 0 {
            return Err(Error::InvalidInput("the batch is empty (no rows)".into()));
        }
        if let Some((name, col)) = columns.iter().find(|(_, c)| c.len() != rows) {
            return Err(Error::InvalidInput(format!(
                "column {:?} has {} rows but {:?} has {rows}",
                name.as_ref(),
                col.len(),
                columns[0].0.as_ref()
            )));
        }
        Ok(Batch { names, rows, layout: Layout::Columnar, columns: columns.iter().map(|(_, c)| *c).collect() })
    }

    /// How many rows the batch holds.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The batch's column names, in column order.
    pub fn feature_names(&self) -> &[String] {
        &self.names
    }
}

fn unique_names<'s>(names: impl Iterator<Item = &'s str>) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for name in names {
        if out.iter().any(|n| n == name) {
            return Err(Error::InvalidInput(format!("feature {name:?} is given twice")));
        }
        out.push(name.to_string());
    }
    if out.is_empty() {
        return Err(Error::InvalidInput("the batch names no features".into()));
    }
    Ok(out)
}

/// The ensemble's feature schema and how to fill dense rows from requests.
#[derive(Debug, Clone)]
pub(crate) struct Schema {
    names: Vec<String>,
    /// For each schema column, the model that first needs it (for error messages).
    needed_by: Vec<String>,
    /// Replacement for each column when the policy imputes; `None` when it refuses.
    imputed: Option<Vec<f32>>,
}

impl Schema {
    pub fn new<'m>(members: impl IntoIterator<Item = (&'m str, &'m [String])>, policy: &NonFinitePolicy) -> Schema {
        let mut names: Vec<String> = Vec::new();
        let mut needed_by = Vec::new();
        for (model, features) in members {
            for f in features {
                if !names.contains(f) {
                    names.push(f.clone());
                    needed_by.push(model.to_string());
                }
            }
        }
        let imputed = match policy {
            NonFinitePolicy::Refuse => None,
            NonFinitePolicy::Impute { value, per_feature } => {
                Some(names.iter().map(|n| per_feature.get(n).copied().unwrap_or(*value)).collect())
            }
        };
        Schema { names, needed_by, imputed }
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    #[inline]
    fn admit(&self, column: usize, value: f32, row: Option<usize>) -> Result<f32> {
        if value.is_finite() {
            return Ok(value);
        }
        match &self.imputed {
            Some(replacements) => Ok(replacements[column]),
            None => Err(Error::NonFinite { feature: self.names[column].clone(), value, row }),
        }
    }

    /// A hash of the feature names in order: equal for equal schemas within this process.
    pub fn fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.names.hash(&mut hasher);
        hasher.finish()
    }

    /// Fills `out` (schema order) from named features.
    pub fn fill_from_features(&self, features: &Features, out: &mut Vec<f32>) -> Result<()> {
        self.fill_from(|name| Ok(features.get(name)), out)
    }

    /// Fills `out` (schema order) asking `value_of` for each feature by name (`None`: missing).
    pub fn fill_from(&self, mut value_of: impl FnMut(&str) -> Result<Option<f32>>, out: &mut Vec<f32>) -> Result<()> {
        out.clear();
        for (column, name) in self.names.iter().enumerate() {
            let value = value_of(name)?.ok_or_else(|| Error::MissingFeature {
                feature: name.clone(),
                model: self.needed_by[column].clone(),
            })?;
            out.push(self.admit(column, value, None)?);
        }
        Ok(())
    }

    /// Checks one row already in schema order; borrows it unless values had to be imputed.
    pub fn dense_row<'r>(&self, row: &'r [f32]) -> Result<Cow<'r, [f32]>> {
        if row.len() != self.names.len() {
            return Err(Error::InvalidInput(format!(
                "wrong row width: got {} values, the ensemble's schema has {} features ({})",
                row.len(),
                self.names.len(),
                self.names.join(",")
            )));
        }
        self.admit_all(Cow::Borrowed(row), false)
    }

    /// Passes an all-finite block through untouched (the check vectorises); otherwise imputes or
    /// refuses value by value.
    fn admit_all<'r>(&self, mut values: Cow<'r, [f32]>, batch: bool) -> Result<Cow<'r, [f32]>> {
        // Blocks without an early exit inside: the check vectorises.
        if values.chunks(256).all(|block| block.iter().fold(true, |fine, v| fine & v.is_finite())) {
            return Ok(values);
        }
        let width = self.names.len();
        for (i, value) in values.to_mut().iter_mut().enumerate() {
            *value = self.admit(i % width, *value, batch.then_some(i / width))?;
        }
        Ok(values)
    }

    /// The batch as `rows × schema width` values, row-major in schema order. A row-major batch whose
    /// columns already are the schema (built from [`crate::EnsembleHandle::feature_names`]) is borrowed,
    /// not copied.
    pub fn dense_batch<'b>(&self, batch: &Batch<'b>) -> Result<Cow<'b, [f32]>> {
        if let Layout::RowMajor(values) = batch.layout {
            if batch.names == self.names {
                return self.admit_all(Cow::Borrowed(values), true);
            }
        }
        let source: Vec<usize> = self
            .names
            .iter()
            .enumerate()
            .map(|(column, name)| {
                batch.names.iter().position(|n| n == name).ok_or_else(|| Error::MissingFeature {
                    feature: name.clone(),
                    model: self.needed_by[column].clone(),
                })
            })
            .collect::<Result<_>>()?;
        let mut out = Vec::with_capacity(batch.rows * source.len());
        match batch.layout {
            Layout::RowMajor(values) => {
                for row in values.chunks_exact(batch.names.len()) {
                    out.extend(source.iter().map(|&from| row[from]));
                }
            }
            Layout::Columnar => {
                for row in 0..batch.rows {
                    out.extend(source.iter().map(|&from| batch.columns[from][row]));
                }
            }
        }
        self.admit_all(Cow::Owned(out), true)
    }
}

/// Copies each row's member columns (`indices` into the schema row) into a member's input buffer.
#[inline]
pub(crate) fn gather(dense: &[f32], schema_width: usize, indices: &[usize], out: &mut Vec<f32>) {
    out.clear();
    for row in dense.chunks_exact(schema_width) {
        out.extend(indices.iter().map(|&i| row[i]));
    }
}

/// A JSON object's entries in order, noting the first name that appears twice (serde_json's own
/// map keeps the last copy silently).
struct UniqueEntries {
    values: Vec<(String, serde_json::Value)>,
    duplicate: Option<String>,
}

impl<'de> serde::Deserialize<'de> for UniqueEntries {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = UniqueEntries;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object of feature names to numbers")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<UniqueEntries, A::Error> {
                let mut seen = std::collections::HashSet::new();
                let mut entries = UniqueEntries { values: Vec::new(), duplicate: None };
                while let Some((name, value)) = map.next_entry::<String, serde_json::Value>()? {
                    if !seen.insert(name.clone()) && entries.duplicate.is_none() {
                        entries.duplicate = Some(name.clone());
                    }
                    entries.values.push((name, value));
                }
                Ok(entries)
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever the schema, batch layout and column order, each member receives exactly its own
        /// features, in its declared order, for every row.
        #[test]
        fn members_receive_their_own_columns_in_order(
            width in 1usize..12,
            rows in 1usize..6,
            picks in prop::collection::vec(prop::collection::vec(0usize..12, 1..6), 1..4),
            rotate in 0usize..12,
            columnar in any::<bool>(),
        ) {
            let all: Vec<String> = (0..width).map(|i| format!("f{i}")).collect();
            let members: Vec<Vec<String>> = picks
                .iter()
                .map(|p| {
                    let mut seen = Vec::new();
                    for &i in p {
                        let name = all[i % width].clone();
                        if !seen.contains(&name) {
                            seen.push(name);
                        }
                    }
                    seen
                })
                .collect();
            let schema = Schema::new(members.iter().enumerate().map(|(i, f)| (if i == 0 { "a" } else { "b" }, f.as_slice())), &NonFinitePolicy::Refuse);
            // The caller's column order differs from the schema's.
            let mut order = all.clone();
            order.rotate_left(rotate % width);
            let value = |row: usize, name: &str| (row * 100) as f32 + name[1..].parse::<f32>().unwrap();
            let matrix: Vec<f32> = (0..rows).flat_map(|r| order.iter().map(move |n| value(r, n))).collect();
            let columns: Vec<Vec<f32>> = order.iter().map(|n| (0..rows).map(|r| value(r, n)).collect()).collect();
            let named: Vec<(&str, &[f32])> = order.iter().zip(&columns).map(|(n, c)| (n.as_str(), c.as_slice())).collect();
            let batch = if columnar { Batch::columnar(&named).unwrap() } else { Batch::row_major(&order, &matrix).unwrap() };
            let dense = schema.dense_batch(&batch).unwrap();
            for features in &members {
                let indices: Vec<usize> = features.iter().map(|f| schema.index_of(f).unwrap()).collect();
                let mut input = Vec::new();
                gather(&dense, schema.names().len(), &indices, &mut input);
                let expected: Vec<f32> = (0..rows).flat_map(|r| features.iter().map(move |f| value(r, f))).collect();
                prop_assert_eq!(input, expected);
            }
        }
    }
}
