//! Models that take a fixed number of rows per call (`torch.onnx.export` without `dynamic_axes`
//! writes a batch dimension of 1): the size a session's input is fixed to, and a batch split into
//! calls of that size, a short last call filled up with copies of its last row.

use ort::session::Session;
use ort::value::ValueType;

/// The batch size the session's first input is fixed to (a positive first dimension), or `None`
/// when it is free (symbolic or -1).
pub(crate) fn fixed_batch(session: &Session) -> Option<usize> {
    match session.inputs().first()?.dtype() {
        ValueType::Tensor { shape, .. } => shape.first().filter(|d| **d > 0).map(|d| *d as usize),
        _ => None,
    }
}

/// One call's worth of rows.
#[derive(Debug)]
pub(crate) struct Piece<'a> {
    /// The first of the batch's rows it holds.
    pub first: usize,
    /// The batch's rows it holds (its first `rows` rows).
    pub rows: usize,
    /// The call's input: `input_rows × width` values, `input_rows ≥ rows`.
    pub input: &'a [f32],
    pub input_rows: usize,
}

/// Calls `run` on consecutive pieces of `values` (`width` columns): all rows at once when
/// `per_call` is `None`, else at most `per_call` rows each. A model whose batch is fixed above 1
/// takes exactly `per_call` rows, so a shorter last piece is filled up with copies of its last row
/// (in `scratch`); only its first `rows` answers are meant.
pub(crate) fn in_calls<E>(
    values: &[f32],
    width: usize,
    per_call: Option<usize>,
    scratch: &mut Vec<f32>,
    mut run: impl FnMut(Piece<'_>) -> Result<(), E>,
) -> Result<(), E> {
    let count = values.len().checked_div(width).unwrap_or(0);
    let Some(n) = per_call.filter(|n| *n > 0) else {
        return run(Piece { first: 0, rows: count, input: values, input_rows: count });
    };
    let mut first = 0;
    while first < count {
        let rows = n.min(count - first);
        let input = &values[first * width..(first + rows) * width];
        if rows == n || n == 1 {
            run(Piece { first, rows, input, input_rows: rows })?;
        } else {
            scratch.clear();
            scratch.extend_from_slice(input);
            let last = &input[(rows - 1) * width..];
            for _ in rows..n {
                scratch.extend_from_slice(last);
            }
            run(Piece { first, rows, input: scratch, input_rows: n })?;
        }
        first += rows;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(count: usize, per_call: Option<usize>) -> Vec<(usize, usize, usize, Vec<f32>)> {
        let values: Vec<f32> = (0..count * 2).map(|v| v as f32).collect();
        let mut seen = Vec::new();
        in_calls::<()>(&values, 2, per_call, &mut Vec::new(), |p| {
            assert_eq!(p.input.len(), p.input_rows * 2);
            seen.push((p.first, p.rows, p.input_rows, p.input.to_vec()));
            Ok(())
        })
        .unwrap();
        seen
    }

    #[test]
    fn a_free_batch_is_one_call_and_a_batch_of_one_is_row_by_row() {
        assert_eq!(pieces(3, None), vec![(0, 3, 3, vec![0., 1., 2., 3., 4., 5.])]);
        assert_eq!(pieces(3, Some(1)), vec![(0, 1, 1, vec![0., 1.]), (1, 1, 1, vec![2., 3.]), (2, 1, 1, vec![4., 5.])]);
        assert_eq!(pieces(1, Some(1)), vec![(0, 1, 1, vec![0., 1.])]);
    }

    #[test]
    fn a_fixed_batch_above_one_pads_the_short_calls_with_their_last_row() {
        assert_eq!(pieces(3, Some(2)), vec![(0, 2, 2, vec![0., 1., 2., 3.]), (2, 1, 2, vec![4., 5., 4., 5.])]);
        // Fewer rows than the fixed size: one padded call.
        assert_eq!(pieces(1, Some(4)), vec![(0, 1, 4, vec![0., 1., 0., 1., 0., 1., 0., 1.])]);
        assert_eq!(pieces(4, Some(4)), vec![(0, 4, 4, (0..8).map(|v| v as f32).collect())]);
    }
}
