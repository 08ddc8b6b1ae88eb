//! The dense kernels of a native plan: matrix products (with bias), element-wise arithmetic with
//! row broadcasting, activations, softmax, concatenation and column gathers, each over a
//! `[rows, width]` block.

/// A dense step.
#[derive(Debug)]
pub(crate) enum Dense {
    /// `out = x · w + bias`, `w` stored `k × m` row-major.
    MatMul {
        k: usize,
        m: usize,
        w: Vec<f32>,
        bias: Option<Vec<f32>>,
    },
    Binary(Binary),
    Unary(Unary),
    Softmax {
        log: bool,
    },
    /// The inputs side by side.
    Concat,
    /// `out[r, j] = x[r, columns[j]]`.
    Gather {
        columns: Vec<usize>,
    },
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
}

/// One side of a binary operation: the step's input `i` (width 1 or the output's), or a constant
/// row (1 or width values).
#[derive(Debug)]
pub(crate) enum Operand {
    Input(usize),
    Const(Vec<f32>),
}

#[derive(Debug)]
pub(crate) struct Binary {
    pub op: BinaryOp,
    pub lhs: Operand,
    pub rhs: Operand,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Unary {
    Relu,
    LeakyRelu(f32),
    Sigmoid,
    Tanh,
    Exp,
    Log,
    Abs,
    Neg,
    Sqrt,
    Reciprocal,
    Softplus,
    Clip(f32, f32),
}

/// From this many rows on, matrix products go through `matrixmultiply`'s packed kernels (runtime
/// AVX/FMA detection); below, a plain loop over the weights is faster.
const PACKED_GEMM_ROWS: usize = 4;

impl Dense {
    pub fn run<'a>(
        &self,
        inputs: &[usize],
        slot: &dyn Fn(usize) -> &'a [f32],
        widths: &[usize],
        rows: usize,
        out: &mut [f32],
    ) {
        match self {
            Dense::MatMul { k, m, w, bias } => matmul(slot(inputs[0]), rows, *k, *m, w, bias.as_deref(), out),
            Dense::Binary(b) => b.run(inputs, slot, widths, rows, out),
            Dense::Unary(u) => u.map(slot(inputs[0]), out),
            Dense::Softmax { log } => {
                out.copy_from_slice(slot(inputs[0]));
                let width = out.len() / rows.max(1);
                for row in out.chunks_exact_mut(width) {
                    softmax(row, *log);
                }
            }
            Dense::Concat => {
                let width = out.len() / rows.max(1);
                let mut at = 0;
                for &s in inputs {
                    let w = widths[s];
                    for (r, src) in slot(s).chunks_exact(w).enumerate() {
                        out[r * width + at..r * width + at + w].copy_from_slice(src);
                    }
                    at += w;
                }
            }
            Dense::Gather { columns } => {
                let x = slot(inputs[0]);
                let w = widths[inputs[0]];
                let width = columns.len();
                for r in 0..rows {
                    for (j, &c) in columns.iter().enumerate() {
                        out[r * width + j] = x[r * w + c];
                    }
                }
            }
        }
    }
}

impl Binary {
    fn run<'a>(
        &self,
        inputs: &[usize],
        slot: &dyn Fn(usize) -> &'a [f32],
        widths: &[usize],
        rows: usize,
        out: &mut [f32],
    ) {
        let (a, ar, ac) = match &self.lhs {
            Operand::Input(i) => (slot(inputs[*i]), widths[inputs[*i]], usize::from(widths[inputs[*i]] != 1)),
            Operand::Const(v) => (v.as_slice(), 0, usize::from(v.len() != 1)),
        };
        let (b, br, bc) = match &self.rhs {
            Operand::Input(i) => (slot(inputs[*i]), widths[inputs[*i]], usize::from(widths[inputs[*i]] != 1)),
            Operand::Const(v) => (v.as_slice(), 0, usize::from(v.len() != 1)),
        };
        let sides = Sides { a, ar, ac, b, br, bc };
        // One loop per operator, each inlined: a function pointer per element does not vectorise.
        match self.op {
            BinaryOp::Add => sides.apply(rows, out, |x, y| x + y),
            BinaryOp::Sub => sides.apply(rows, out, |x, y| x - y),
            BinaryOp::Mul => sides.apply(rows, out, |x, y| x * y),
            BinaryOp::Div => sides.apply(rows, out, |x, y| x / y),
        }
    }
}

/// A binary step's two sides as (values, per-row stride, per-column stride): broadcasting is a
/// zero stride.
struct Sides<'a> {
    a: &'a [f32],
    ar: usize,
    ac: usize,
    b: &'a [f32],
    br: usize,
    bc: usize,
}

impl Sides<'_> {
    #[inline(always)]
    fn apply(&self, rows: usize, out: &mut [f32], f: impl Fn(f32, f32) -> f32) {
        let Sides { a, ar, ac, b, br, bc } = *self;
        let width = out.len() / rows.max(1);
        if ar == width && ac == 1 && br == 0 && bc == 1 {
            // The common case (a bias or scale row): vectorises.
            for (orow, arow) in out.chunks_exact_mut(width).zip(a.chunks_exact(width)) {
                for ((o, x), y) in orow.iter_mut().zip(arow).zip(b) {
                    *o = f(*x, *y);
                }
            }
            return;
        }
        for r in 0..rows {
            for j in 0..width {
                out[r * width + j] = f(a[r * ar + j * ac], b[r * br + j * bc]);
            }
        }
    }
}

impl Unary {
    /// `out[i] = f(x[i])`, one loop per function (a per-element `match` does not vectorise).
    fn map(self, x: &[f32], out: &mut [f32]) {
        #[inline(always)]
        fn each(x: &[f32], out: &mut [f32], f: impl Fn(f32) -> f32) {
            for (o, v) in out.iter_mut().zip(x) {
                *o = f(*v);
            }
        }
        match self {
            Unary::Relu => each(x, out, |v| Unary::Relu.apply(v)),
            Unary::Sigmoid => each(x, out, sigmoid),
            Unary::Tanh => each(x, out, f32::tanh),
            Unary::Neg => each(x, out, |v| -v),
            other => each(x, out, |v| other.apply(v)),
        }
    }

    #[inline(always)]
    fn apply(self, x: f32) -> f32 {
        match self {
            // NaN stays NaN, as in ONNX Runtime.
            Unary::Relu => {
                if x > 0.0 || x.is_nan() {
                    x
                } else {
                    0.0
                }
            }
            Unary::LeakyRelu(alpha) => {
                if x >= 0.0 {
                    x
                } else {
                    alpha * x
                }
            }
            Unary::Sigmoid => sigmoid(x),
            Unary::Tanh => x.tanh(),
            Unary::Exp => x.exp(),
            Unary::Log => x.ln(),
            Unary::Abs => x.abs(),
            Unary::Neg => -x,
            Unary::Sqrt => x.sqrt(),
            Unary::Reciprocal => 1.0 / x,
            Unary::Softplus => {
                if x > 0.0 {
                    x + (-x).exp().ln_1p()
                } else {
                    x.exp().ln_1p()
                }
            }
            Unary::Clip(lo, hi) => {
                if x.is_nan() {
                    x
                } else {
                    x.max(lo).min(hi)
                }
            }
        }
    }
}

/// e^x within 2 ulp for x in [-87.3, 88] (clamped there: at most 1.2e-38 off below, a finite
/// 1.7e38 above; NaN stays NaN), by Cephes' expf: x = n·ln 2 + r, a degree-7 polynomial for e^r,
/// 2^n built in the exponent bits. No branch and no library call (not even `mul_add`, a call to
/// fmaf on the x86-64 baseline), so that a loop over a slice vectorises.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    // Adding 1.5·2^23 rounds to an integer and leaves it in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.336_55, 88.0);
    let t = x * std::f32::consts::LOG2_E + ROUND;
    let n = t - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_2e-4_f32;
    let p = p * r + 1.398_2e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 0.166_666_65;
    let p = p * r + 0.5;
    let e = p * (r * r) + (r + 1.0);
    let scale = f32::from_bits(((t.to_bits() as i32 - 0x4B40_0000 + 127) << 23) as u32);
    e * scale
}

/// The logistic function 1 / (1 + e^-x) (NaN stays NaN), vectorisable like [`exp`].
#[inline(always)]
pub(crate) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// Softmax (or log-softmax) of one row in place, max-subtracted as ONNX Runtime does.
pub(crate) fn softmax(row: &mut [f32], log: bool) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    for v in row.iter_mut() {
        let e = exp(*v - max);
        sum += e;
        if !log {
            *v = e;
        }
    }
    if log {
        let shift = max + sum.ln();
        for v in row.iter_mut() {
            *v -= shift;
        }
    } else {
        for v in row.iter_mut() {
            *v /= sum;
        }
    }
}

/// `out[rows × m] = x[rows × k] · w[k × m] (+ bias)`.
fn matmul(x: &[f32], rows: usize, k: usize, m: usize, w: &[f32], bias: Option<&[f32]>, out: &mut [f32]) {
    assert!(x.len() >= rows * k && w.len() == k * m && out.len() == rows * m);
    for row in out.chunks_exact_mut(m) {
        match bias {
            Some(b) => row.copy_from_slice(b),
            None => row.fill(0.0),
        }
    }
    if rows >= PACKED_GEMM_ROWS {
        packed_gemm(x, rows, k, m, w, out);
        return;
    }
    for (xrow, orow) in x.chunks_exact(k).zip(out.chunks_exact_mut(m)) {
        for (xi, wrow) in xrow.iter().zip(w.chunks_exact(m)) {
            for (o, wv) in orow.iter_mut().zip(wrow) {
                *o += xi * wv;
            }
        }
    }
}

/// `out += x · w` through matrixmultiply's packed, runtime-dispatched kernels.
#[allow(unsafe_code)]
fn packed_gemm(x: &[f32], rows: usize, k: usize, m: usize, w: &[f32], out: &mut [f32]) {
    assert!(x.len() >= rows * k && w.len() >= k * m && out.len() >= rows * m);
    // SAFETY: the three slices hold at least rows×k, k×m and rows×m elements (checked above), the
    // strides describe dense row-major matrices of those shapes, and `out` is borrowed mutably and
    // does not overlap the inputs.
    unsafe {
        matrixmultiply::sgemm(
            rows,
            k,
            m,
            1.0,
            x.as_ptr(),
            k as isize,
            1,
            w.as_ptr(),
            m as isize,
            1,
            1.0,
            out.as_mut_ptr(),
            m as isize,
            1,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_a_few_ulp_of_the_library_and_keeps_nan() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (got, want) = (f64::from(exp(x)), f64::from(x).exp());
            worst = worst.max(((got - want) / want).abs());
            x += 0.001_37;
        }
        assert!(worst < 3.0 * f64::from(f32::EPSILON), "relative error {worst:e}");
        assert!(exp(f32::NAN).is_nan() && sigmoid(f32::NAN).is_nan());
        // Clamped, not infinite or negative: a logistic of an extreme score stays in [0, 1].
        assert!(exp(1e4).is_finite() && exp(-1e4) >= 0.0);
        assert_eq!((sigmoid(1e4), sigmoid(-1e4) < 1e-30), (1.0, true));
    }
}
