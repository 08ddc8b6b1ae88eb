//! Batches as `ndarray` arrays (feature `ndarray`): a `rows × features` [`ArrayView2<f32>`] in,
//! read in place when it is in C or Fortran order, and the answers as arrays viewing the
//! [`BatchPrediction`]'s own buffers. Rust ML code holding arrays needs no conversion.

use std::time::Instant;

use ndarray::{ArrayView1, ArrayView2};

use super::EnsembleHandle;
use crate::error::{Error, Result};
use crate::features::Batch;
use crate::prediction::BatchPrediction;

impl EnsembleHandle {
    /// Predicts every row of `rows`, whose columns are [`EnsembleHandle::feature_names`] in order.
    /// A C-ordered (row-major) or Fortran-ordered (column-major) array is read without a copy;
    /// any other layout (a strided slice) is copied once.
    pub fn predict_array(&self, rows: ArrayView2<'_, f32>) -> Result<BatchPrediction> {
        let names = self.feature_names();
        self.predict_array_with_names(&names, rows)
    }

    /// [`EnsembleHandle::predict_array`] for an array whose columns are `feature_names`, in any
    /// order and possibly with columns the ensemble does not use.
    pub fn predict_array_with_names<S: AsRef<str>>(
        &self,
        feature_names: &[S],
        rows: ArrayView2<'_, f32>,
    ) -> Result<BatchPrediction> {
        let started = Instant::now();
        if rows.ncols() != feature_names.len() {
            return Err(Error::InvalidInput(format!(
                "wrong row width: the array has {} columns but {} feature names apply",
                rows.ncols(),
                feature_names.len()
            )));
        }
        let copied;
        let batch = if let Some(values) = rows.to_slice() {
            Batch::row_major(feature_names, values)?
        } else if let Some(values) = rows.reversed_axes().to_slice() {
            let n = rows.nrows();
            let columns: Vec<(&str, &[f32])> = feature_names
                .iter()
                .enumerate()
                .map(|(c, name)| (name.as_ref(), &values[c * n..(c + 1) * n]))
                .collect();
            Batch::columnar(&columns)?
        } else {
            copied = rows.as_standard_layout().into_owned();
            Batch::row_major(feature_names, copied.as_slice().unwrap_or_default())?
        };
        self.run_batch(&batch, started, None)
    }
}

impl BatchPrediction {
    /// The ensemble's predictions, one per row, viewing the batch's buffer.
    pub fn predictions_array(&self) -> ArrayView1<'_, f32> {
        ArrayView1::from(&self.predictions[..])
    }

    /// The confidences, one per row.
    pub fn confidences_array(&self) -> ArrayView1<'_, f32> {
        ArrayView1::from(&self.confidences[..])
    }

    /// `rows × members` member predictions (NaN where a member failed).
    pub fn member_predictions_array(&self) -> ArrayView2<'_, f32> {
        ArrayView2::from_shape((self.len(), self.members.len()), &self.member_predictions)
            .expect("member predictions are rows × members values by construction")
    }
}
