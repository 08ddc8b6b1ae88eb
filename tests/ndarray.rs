//! Batches as ndarray arrays (feature `ndarray`): every layout predicts what `predict_batch` does,
//! and the answers come back as arrays over the batch's own buffers.

mod common;

use ndarray::{s, Array2, ShapeBuilder};
use quorum::{Batch, Error};

#[test]
fn c_order_fortran_order_and_strided_arrays_predict_as_predict_batch_does() {
    let home = tempfile::tempdir().unwrap();
    let engine = common::market_engine(home.path());
    let handle = engine.ensemble("market").unwrap();
    let names = handle.feature_names();
    let rows = common::holdout_features(32);
    let matrix: Vec<f32> = rows.iter().flat_map(|f| names.iter().map(|n| f.get(n).unwrap())).collect();
    let expected = handle.predict_batch(&Batch::row_major(&names, &matrix).unwrap()).unwrap();

    let c_order = Array2::from_shape_vec((32, names.len()), matrix.clone()).unwrap();
    let mut fortran = Array2::zeros((32, names.len()).f());
    fortran.assign(&c_order);
    assert!(fortran.as_slice().is_none() && fortran.t().as_slice().is_some(), "a column-major array");
    // Every other row of a 64-row array: neither order is contiguous.
    let mut doubled = Array2::zeros((64, names.len()));
    doubled.slice_mut(s![..;2, ..]).assign(&c_order);
    let strided = doubled.slice(s![..;2, ..]);
    assert!(strided.as_slice().is_none() && strided.t().as_slice().is_none());

    for view in [c_order.view(), fortran.view(), strided] {
        let got = handle.predict_array(view).unwrap();
        assert_eq!(got.predictions_array().len(), 32);
        assert_eq!(got.predictions_array().as_slice().unwrap(), &expected.predictions[..]);
        assert_eq!(got.confidences_array().as_slice().unwrap(), &expected.confidences[..]);
        let members = got.member_predictions_array();
        assert_eq!(members.dim(), (32, 3));
        assert_eq!(members[[5, 1]], expected.member_predictions[5 * 3 + 1]);
    }
}

#[test]
fn an_array_of_the_wrong_width_is_invalid_input() {
    let home = tempfile::tempdir().unwrap();
    let engine = common::market_engine(home.path());
    let handle = engine.ensemble("market").unwrap();
    let narrow = Array2::<f32>::zeros((4, 3));
    assert!(matches!(handle.predict_array(narrow.view()), Err(Error::InvalidInput(_))));
}
