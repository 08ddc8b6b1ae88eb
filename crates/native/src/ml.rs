//! The ai.onnx.ml operators around the trees: `LinearClassifier`, `LinearRegressor`, `Scaler`,
//! `Normalizer`, `Imputer`, and the post-transforms (logistic, softmax, softmax-zero, probit) as ONNX
//! Runtime applies them.

use super::attributes::{attr_floats, attr_i, attr_ints, attr_s, attr_strings, known_attributes};
use super::dense::{sigmoid, softmax};
use quorum_onnx::proto::NodeProto;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PostTransform {
    None,
    Logistic,
    Softmax,
    SoftmaxZero,
    Probit,
}

impl PostTransform {
    pub fn parse(value: Option<&str>) -> Result<PostTransform, String> {
        Ok(match value {
            None | Some("NONE") => PostTransform::None,
            Some("LOGISTIC") => PostTransform::Logistic,
            Some("SOFTMAX") => PostTransform::Softmax,
            Some("SOFTMAX_ZERO") => PostTransform::SoftmaxZero,
            Some("PROBIT") => PostTransform::Probit,
            Some(other) => return Err(format!("post_transform {other:?}")),
        })
    }
}

/// ONNX Runtime's approximation of the inverse error function (its probit uses it).
fn erf_inv(x: f32) -> f32 {
    let sgn = if x < 0.0 { -1.0 } else { 1.0 };
    let x = (1.0 - x) * (1.0 + x);
    let log = x.ln();
    let v = 2.0 / (std::f32::consts::PI * 0.147) + 0.5 * log;
    let v2 = 1.0 / 0.147 * log;
    let v3 = -v + (v * v - v2).sqrt();
    sgn * v3.sqrt()
}

pub(crate) fn probit(v: f32) -> f32 {
    std::f32::consts::SQRT_2 * erf_inv(2.0 * v - 1.0)
}

/// A row of two or more scores transformed in place.
pub(crate) fn post_transform_row(row: &mut [f32], t: PostTransform) {
    match t {
        PostTransform::None => {}
        PostTransform::Logistic => row.iter_mut().for_each(|v| *v = sigmoid(*v)),
        PostTransform::Probit => row.iter_mut().for_each(|v| *v = probit(*v)),
        PostTransform::Softmax => softmax(row, false),
        PostTransform::SoftmaxZero => {
            // Zeros stay out of the sum (exp(0) would count them).
            let max = row.iter().copied().fold(f32::MIN, f32::max);
            let exp_neg_max = (-max).exp();
            let mut sum = 0.0f32;
            for v in row.iter_mut() {
                if *v > 1e-7 || *v < -1e-7 {
                    *v = (*v - max).exp();
                    sum += *v;
                } else {
                    *v *= exp_neg_max;
                }
            }
            row.iter_mut().for_each(|v| *v /= sum);
        }
    }
}

#[derive(Debug)]
pub(crate) enum MlOp {
    /// `scores = x · coefficientsᵀ + intercepts`, then the classifier's or regressor's finish.
    Linear {
        /// `targets × features`, row-major.
        coefficients: Vec<f32>,
        intercepts: Vec<f32>,
        targets: usize,
        transform: PostTransform,
        /// A classifier with one score column and two labels: `[1 - s, s]`.
        second_class: bool,
    },
    Scaler {
        offset: Vec<f32>,
        scale: Vec<f32>,
    },
    Normalizer(Norm),
    Imputer {
        values: Vec<f32>,
        replaced: f32,
    },
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Norm {
    Max,
    L1,
    L2,
}

impl MlOp {
    pub fn compile(node: &NodeProto, op: &str, width: usize) -> Result<MlOp, String> {
        let per_column = |v: Vec<f32>, what: &str| -> Result<Vec<f32>, String> {
            match v.len() {
                1 => Ok(vec![v[0]; width]),
                n if n == width => Ok(v),
                n => Err(format!("{n} {what} for {width} columns")),
            }
        };
        match op {
            "LinearClassifier" | "LinearRegressor" => {
                let classifier = op == "LinearClassifier";
                if classifier {
                    known_attributes(
                        node,
                        &[
                            "coefficients",
                            "intercepts",
                            "multi_class",
                            "post_transform",
                            "classlabels_ints",
                            "classlabels_strings",
                        ],
                    )?;
                } else {
                    known_attributes(node, &["coefficients", "intercepts", "post_transform", "targets"])?;
                }
                let coefficients = attr_floats(node, "coefficients");
                let mut intercepts = attr_floats(node, "intercepts");
                let targets = if classifier {
                    intercepts.len()
                } else {
                    usize::try_from(attr_i(node, "targets").unwrap_or(1)).map_err(|_| "a negative targets")?
                };
                if targets == 0 || coefficients.len() != targets * width {
                    return Err(format!(
                        "{} coefficients for {targets} targets of {width} features",
                        coefficients.len()
                    ));
                }
                if intercepts.is_empty() {
                    intercepts = vec![0.0; targets];
                }
                if intercepts.len() != targets {
                    return Err(format!("{} intercepts for {targets} targets", intercepts.len()));
                }
                let transform = PostTransform::parse(attr_s(node, "post_transform").as_deref())?;
                let labels =
                    attr_ints(node, "classlabels_ints").len().max(attr_strings(node, "classlabels_strings").len());
                let second_class = classifier && targets == 1 && labels == 2;
                if second_class && transform == PostTransform::Probit {
                    return Err("a binary classifier that writes a single probit score".into());
                }
                Ok(MlOp::Linear { coefficients, intercepts, targets, transform, second_class })
            }
            "Scaler" => {
                known_attributes(node, &["offset", "scale"])?;
                let offset = per_column(attr_floats(node, "offset"), "offsets")?;
                let scale = per_column(attr_floats(node, "scale"), "scales")?;
                Ok(MlOp::Scaler { offset, scale })
            }
            "Normalizer" => {
                known_attributes(node, &["norm"])?;
                Ok(MlOp::Normalizer(match attr_s(node, "norm").as_deref() {
                    Some("MAX") => Norm::Max,
                    Some("L1") => Norm::L1,
                    Some("L2") => Norm::L2,
                    other => return Err(format!("norm {other:?}")),
                }))
            }
            "Imputer" => {
                known_attributes(node, &["imputed_value_floats", "replaced_value_float"])?;
                let values = per_column(attr_floats(node, "imputed_value_floats"), "imputed values")?;
                let replaced = super::attributes::attr_f(node, "replaced_value_float").unwrap_or(0.0);
                Ok(MlOp::Imputer { values, replaced })
            }
            other => Err(format!("operator {other}")),
        }
    }

    /// Output columns for an input of `width`.
    pub fn outputs(&self, width: usize) -> usize {
        match self {
            MlOp::Linear { targets, second_class, .. } => {
                if *second_class {
                    2
                } else {
                    *targets
                }
            }
            _ => width,
        }
    }

    pub fn run(&self, x: &[f32], width: usize, rows: usize, out: &mut [f32]) {
        match self {
            MlOp::Linear { coefficients, intercepts, targets, transform, second_class } => {
                let stride = if *second_class { 2 } else { *targets };
                // A logistic over every score runs once over the whole output, where it vectorises.
                let elementwise = !*second_class && *targets > 1 && *transform == PostTransform::Logistic;
                for r in 0..rows {
                    let row = &x[r * width..(r + 1) * width];
                    let scores = &mut out[r * stride..(r + 1) * stride];
                    for (t, (c, b)) in coefficients.chunks_exact(width).zip(intercepts).enumerate() {
                        let dot: f32 = row.iter().zip(c).map(|(a, b)| a * b).sum();
                        scores[t] = dot + b;
                    }
                    if *second_class {
                        let s = scores[0];
                        scores[0] = 1.0 - s;
                        scores[1] = s;
                    } else if *targets == 1 {
                        // One score: ONNX Runtime applies only a probit to it.
                        if *transform == PostTransform::Probit {
                            scores[0] = probit(scores[0]);
                        }
                    } else if !elementwise {
                        post_transform_row(scores, *transform);
                    }
                }
                if elementwise {
                    out[..rows * stride].iter_mut().for_each(|v| *v = sigmoid(*v));
                }
            }
            MlOp::Scaler { offset, scale } => {
                for (orow, xrow) in out.chunks_exact_mut(width).zip(x.chunks_exact(width)) {
                    for (((o, v), off), sc) in orow.iter_mut().zip(xrow).zip(offset).zip(scale) {
                        *o = (v - off) * sc;
                    }
                }
            }
            MlOp::Normalizer(norm) => {
                for (orow, xrow) in out.chunks_exact_mut(width).zip(x.chunks_exact(width)) {
                    normalize(*norm, xrow, orow);
                }
            }
            MlOp::Imputer { values, replaced } => {
                for (orow, xrow) in out.chunks_exact_mut(width).zip(x.chunks_exact(width)) {
                    for ((o, v), fill) in orow.iter_mut().zip(xrow).zip(values) {
                        let missing = if replaced.is_nan() { v.is_nan() } else { v == replaced };
                        *o = if missing { *fill } else { *v };
                    }
                }
            }
        }
    }
}

fn normalize(norm: Norm, x: &[f32], out: &mut [f32]) {
    match norm {
        Norm::Max => {
            let max = x.iter().copied().fold(f32::MIN, f32::max);
            for (o, v) in out.iter_mut().zip(x) {
                *o = if max != 0.0 { v / max } else { *v };
            }
        }
        Norm::L1 => {
            let sum: f32 = x.iter().map(|v| v.abs()).sum();
            for (o, v) in out.iter_mut().zip(x) {
                *o = if sum != 0.0 { v / sum } else { *v };
            }
        }
        Norm::L2 => {
            let sum: f32 = x.iter().map(|v| v * v).sum();
            for (o, v) in out.iter_mut().zip(x) {
                *o = if sum != 0.0 {
                    let sign = if *v < 0.0 { -1.0 } else { 1.0 };
                    (v * v / sum).sqrt() * sign
                } else {
                    *v
                };
            }
        }
    }
}
