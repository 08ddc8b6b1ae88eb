//! Feature `gpu`: a native MLP plan on an NVIDIA GPU through cudarc (the driver, cuBLAS and NVRTC are
//! loaded at run time; nothing CUDA is needed to build). Layers are cuBLAS GEMMs (float32, or float16
//! storage with float32 accumulation), bias and activation one NVRTC kernel per layer, softmax per
//! row. For large batches, where a GPU beats the CPU; the CPU plan stays the reference it is compared
//! with.

#![allow(unsafe_code)]

use std::sync::Arc;

use cudarc::cublas::{sys::cublasOperation_t, CudaBlas, Gemm, GemmConfig};
use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, CudaStream, LaunchConfig, PushKernelArg};
use half::f16;

use super::dense::{BinaryOp, Dense, Operand, Unary};
use super::{Kernel, NativeModel};

pub use super::Precision;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
enum Activation {
    None = 0,
    Relu = 1,
    Sigmoid = 2,
    Tanh = 3,
}

/// One dense layer read off a CPU plan: `y = act(x · w + bias)`, `w` row-major `k × m`.
#[derive(Debug)]
struct HostLayer {
    k: usize,
    m: usize,
    w: Vec<f32>,
    bias: Vec<f32>,
    activation: Activation,
}

enum Weights {
    F32(CudaSlice<f32>),
    F16(CudaSlice<f16>),
}

struct Layer {
    k: usize,
    m: usize,
    w: Weights,
    bias: CudaSlice<f32>,
    activation: Activation,
}

const KERNELS: &str = r#"
__device__ float h2f(unsigned short h) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f; }
__device__ unsigned short f2h(float f) { unsigned short h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h; }
__device__ float act(float v, int a) {
    if (a == 1) return v > 0.0f ? v : 0.0f;
    if (a == 2) return 1.0f / (1.0f + expf(-v));
    if (a == 3) return tanhf(v);
    return v;
}
extern "C" __global__ void bias_act_f32(float* y, const float* b, int m, long long n, int a) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = act(y[i] + b[i % m], a);
}
extern "C" __global__ void bias_act_f16(unsigned short* y, const float* b, int m, long long n, int a) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = f2h(act(h2f(y[i]) + b[i % m], a));
}
extern "C" __global__ void to_f16(const float* x, unsigned short* y, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = f2h(x[i]);
}
extern "C" __global__ void to_f32(const unsigned short* x, float* y, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = h2f(x[i]);
}
extern "C" __global__ void softmax_rows(float* y, int m, int rows) {
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) return;
    float* row = y + (long long)r * m;
    float mx = row[0];
    for (int j = 1; j < m; j++) mx = fmaxf(mx, row[j]);
    float s = 0.0f;
    for (int j = 0; j < m; j++) { row[j] = expf(row[j] - mx); s += row[j]; }
    for (int j = 0; j < m; j++) row[j] /= s;
}
"#;

struct Kernels {
    bias_act_f32: CudaFunction,
    bias_act_f16: CudaFunction,
    to_f16: CudaFunction,
    to_f32: CudaFunction,
    softmax_rows: CudaFunction,
}

/// An MLP plan on the GPU, with device buffers grown to the largest batch seen.
pub struct GpuMlp {
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    kernels: Kernels,
    layers: Vec<Layer>,
    softmax: bool,
    precision: Precision,
    input: Option<CudaSlice<f32>>,
    /// Ping-pong activations (float32 or float16 by precision), and the float32 output.
    act32: [Option<CudaSlice<f32>>; 2],
    act16: [Option<CudaSlice<f16>>; 2],
    output: Option<CudaSlice<f32>>,
    capacity: usize,
}

impl std::fmt::Debug for GpuMlp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuMlp").field("layers", &self.layers.len()).field("precision", &self.precision).finish()
    }
}

fn err(e: impl std::fmt::Debug) -> String {
    format!("{e:?}")
}

fn blocks(n: usize) -> LaunchConfig {
    LaunchConfig::for_num_elems(u32::try_from(n).unwrap_or(u32::MAX))
}

/// The plan as a chain of dense layers, or why it is not one.
fn layers_of(plan: &NativeModel) -> Result<(Vec<HostLayer>, bool), String> {
    let mut layers: Vec<HostLayer> = Vec::new();
    let mut softmax = false;
    let mut current = 0usize;
    for (i, step) in plan.steps.iter().enumerate() {
        let not_chain = || format!("step {i} is not the next layer of an MLP");
        if step.inputs.first() != Some(&current) || softmax {
            return Err(not_chain());
        }
        match &step.kernel {
            Kernel::Dense(Dense::MatMul { k, m, w, bias }) => layers.push(HostLayer {
                k: *k,
                m: *m,
                w: w.clone(),
                bias: bias.clone().unwrap_or_else(|| vec![0.0; *m]),
                activation: Activation::None,
            }),
            Kernel::Dense(Dense::Binary(b)) if matches!(b.op, BinaryOp::Add) => {
                let last = layers.last_mut().filter(|l| l.activation == Activation::None).ok_or_else(not_chain)?;
                let row = match (&b.lhs, &b.rhs) {
                    (Operand::Input(0), Operand::Const(v)) | (Operand::Const(v), Operand::Input(0)) => v,
                    _ => return Err(not_chain()),
                };
                match row.len() {
                    1 => last.bias.iter_mut().for_each(|x| *x += row[0]),
                    n if n == last.m => last.bias.iter_mut().zip(row).for_each(|(x, r)| *x += r),
                    _ => return Err(not_chain()),
                }
            }
            Kernel::Dense(Dense::Unary(u)) => {
                let last = layers.last_mut().filter(|l| l.activation == Activation::None).ok_or_else(not_chain)?;
                last.activation = match u {
                    Unary::Relu => Activation::Relu,
                    Unary::Sigmoid => Activation::Sigmoid,
                    Unary::Tanh => Activation::Tanh,
                    _ => return Err(format!("step {i}: an activation the GPU plan does not have")),
                };
            }
            Kernel::Dense(Dense::Softmax { log: false }) if !layers.is_empty() => softmax = true,
            _ => return Err(not_chain()),
        }
        current = step.output;
    }
    if layers.is_empty() || current != plan.output {
        return Err("the plan is not an MLP".into());
    }
    Ok((layers, softmax))
}

/// Whether each CUDA library cudarc will load can be found, by the names cudarc tries: cudarc
/// panics on a missing library, and a machine without a GPU must get an error instead.
fn libraries_present() -> Result<(), String> {
    for lib in ["cuda", "cublas", "cublasLt", "nvrtc"] {
        let found = cudarc::get_lib_name_candidates(lib).iter().any(|name| {
            // SAFETY: loading a CUDA library runs its initialisers, as cudarc's own load would.
            unsafe { libloading::Library::new(name) }.is_ok()
        });
        if !found {
            return Err(format!("the CUDA library {lib:?} is not on the library path (no GPU or no CUDA 13)"));
        }
    }
    Ok(())
}

impl GpuMlp {
    /// The CPU plan's layers on GPU `device`; `Err` when the plan is not a chain of dense layers
    /// (with ReLU, sigmoid or tanh, and an optional final softmax) or no GPU answers.
    pub fn new(plan: &NativeModel, device: usize, precision: Precision) -> Result<GpuMlp, String> {
        let (host, softmax) = layers_of(plan)?;
        libraries_present()?;
        std::panic::catch_unwind(|| GpuMlp::build(host, softmax, device, precision))
            .unwrap_or_else(|_| Err("cudarc panicked while loading CUDA".into()))
    }

    fn build(host: Vec<HostLayer>, softmax: bool, device: usize, precision: Precision) -> Result<GpuMlp, String> {
        let ctx = CudaContext::new(device).map_err(err)?;
        let stream = ctx.default_stream();
        let blas = CudaBlas::new(Arc::clone(&stream)).map_err(err)?;
        let ptx = cudarc::nvrtc::compile_ptx(KERNELS).map_err(err)?;
        let module = ctx.load_module(ptx).map_err(err)?;
        let f = |name: &str| module.load_function(name).map_err(err);
        let kernels = Kernels {
            bias_act_f32: f("bias_act_f32")?,
            bias_act_f16: f("bias_act_f16")?,
            to_f16: f("to_f16")?,
            to_f32: f("to_f32")?,
            softmax_rows: f("softmax_rows")?,
        };
        let mut layers = Vec::new();
        for l in host {
            let w = match precision {
                Precision::F32 => Weights::F32(stream.clone_htod(&l.w).map_err(err)?),
                Precision::F16 => {
                    let h: Vec<f16> = l.w.iter().map(|v| f16::from_f32(*v)).collect();
                    Weights::F16(stream.clone_htod(&h).map_err(err)?)
                }
            };
            let bias = stream.clone_htod(&l.bias).map_err(err)?;
            layers.push(Layer { k: l.k, m: l.m, w, bias, activation: l.activation });
        }
        Ok(GpuMlp {
            stream,
            blas,
            kernels,
            layers,
            softmax,
            precision,
            input: None,
            act32: [None, None],
            act16: [None, None],
            output: None,
            capacity: 0,
        })
    }

    /// float32 or float16.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    fn reserve(&mut self, rows: usize) -> Result<(), String> {
        if rows <= self.capacity {
            return Ok(());
        }
        let k0 = self.layers[0].k;
        let widest = self.layers.iter().map(|l| l.m).max().unwrap_or(1).max(k0);
        let last = self.layers.last().map_or(1, |l| l.m);
        self.input = Some(self.stream.alloc_zeros::<f32>(rows * k0).map_err(err)?);
        self.output = Some(self.stream.alloc_zeros::<f32>(rows * last).map_err(err)?);
        match self.precision {
            Precision::F32 => {
                for a in &mut self.act32 {
                    *a = Some(self.stream.alloc_zeros::<f32>(rows * widest).map_err(err)?);
                }
            }
            Precision::F16 => {
                for a in &mut self.act16 {
                    *a = Some(self.stream.alloc_zeros::<f16>(rows * widest).map_err(err)?);
                }
            }
        }
        self.capacity = rows;
        Ok(())
    }

    /// Runs `rows` rows of `input` (row-major) and writes `rows × outputs` values to `out`; the
    /// copies in and out are included (the call returns when the answer is on the host).
    /// The plan on the GPU, checked against the CPU plan on the probe rows (float32: as native plans
    /// are checked against ONNX Runtime; float16: within 1e-2). The engine and the optimizer both
    /// take a GPU plan only through here.
    pub fn verified(plan: &NativeModel, options: super::GpuOptions) -> Result<GpuMlp, String> {
        let mut gpu = GpuMlp::new(plan, options.device, options.precision)?;
        let probes = super::probe_rows(plan.input_width());
        let rows = probes.len() / plan.input_width();
        let mut arena = Vec::new();
        let expected = plan.run(&probes, rows, &mut arena).to_vec();
        let mut got = Vec::new();
        gpu.run(&probes, rows, &mut got)?;
        for (g, e) in got.iter().zip(&expected) {
            let close = match options.precision {
                Precision::F32 => super::agrees(*g, *e),
                Precision::F16 => (g - e).abs() <= 1e-2 * e.abs().max(1.0),
            };
            if !close {
                return Err(format!("on the probe rows the GPU answered {g} where the CPU plan answered {e}"));
            }
        }
        Ok(gpu)
    }

    /// Runs `rows` rows of `input` (row-major) and writes one prediction per row into `out`; the error is the CUDA or
    /// cuBLAS failure, as text.
    pub fn run(&mut self, input: &[f32], rows: usize, out: &mut Vec<f32>) -> Result<(), String> {
        if rows == 0 {
            out.clear();
            return Ok(());
        }
        self.reserve(rows)?;
        let (Some(dev_in), Some(dev_out)) = (self.input.as_mut(), self.output.as_mut()) else {
            return Err("no device buffers".into());
        };
        let k0 = self.layers[0].k;
        self.stream.memcpy_htod(&input[..rows * k0], &mut dev_in.slice_mut(..rows * k0)).map_err(err)?;
        let last_m = self.layers.last().map_or(1, |l| l.m);
        match self.precision {
            Precision::F32 => {
                let [a, b] = &mut self.act32;
                let (a, b) = (a.as_mut().ok_or("no buffer")?, b.as_mut().ok_or("no buffer")?);
                let count = self.layers.len();
                for (i, layer) in self.layers.iter().enumerate() {
                    let Weights::F32(w) = &layer.w else { return Err("weights of another precision".into()) };
                    // Row-major Y = X · W is column-major Yᵀ = Wᵀ · Xᵀ (see the module docs).
                    let cfg = GemmConfig {
                        transa: cublasOperation_t::CUBLAS_OP_N,
                        transb: cublasOperation_t::CUBLAS_OP_N,
                        m: layer.m as i32,
                        n: rows as i32,
                        k: layer.k as i32,
                        alpha: 1.0f32,
                        lda: layer.m as i32,
                        ldb: layer.k as i32,
                        beta: 0.0f32,
                        ldc: layer.m as i32,
                    };
                    let last = i + 1 == count;
                    let (src, dst): (&CudaSlice<f32>, &mut CudaSlice<f32>) = match (i, last) {
                        (0, true) => (&*dev_in, &mut *dev_out),
                        (0, false) => (&*dev_in, &mut *a),
                        (_, true) => (if i % 2 == 1 { &*a } else { &*b }, &mut *dev_out),
                        _ if i % 2 == 1 => (&*a, &mut *b),
                        _ => (&*b, &mut *a),
                    };
                    // SAFETY: the buffers hold at least rows × k (source), k × m (weights) and
                    // rows × m (destination) floats: reserve() sized them for the widest layer.
                    unsafe { self.blas.gemm(cfg, w, src, dst) }.map_err(err)?;
                    let n = rows * layer.m;
                    let (m, nn, act) = (layer.m as i32, n as i64, layer.activation as i32);
                    let mut launch = self.stream.launch_builder(&self.kernels.bias_act_f32);
                    launch.arg(&mut *dst).arg(&layer.bias).arg(&m).arg(&nn).arg(&act);
                    // SAFETY: the kernel reads n values of dst and m of bias, which both hold.
                    unsafe { launch.launch(blocks(n)) }.map_err(err)?;
                }
            }
            Precision::F16 => {
                let [a, b] = &mut self.act16;
                let (a, b) = (a.as_mut().ok_or("no buffer")?, b.as_mut().ok_or("no buffer")?);
                let n0 = (rows * k0) as i64;
                let mut launch = self.stream.launch_builder(&self.kernels.to_f16);
                launch.arg(&*dev_in).arg(&mut *a).arg(&n0);
                // SAFETY: rows × k0 values in and out, both buffers hold them.
                unsafe { launch.launch(blocks(rows * k0)) }.map_err(err)?;
                for (i, layer) in self.layers.iter().enumerate() {
                    let Weights::F16(w) = &layer.w else { return Err("weights of another precision".into()) };
                    let cfg = GemmConfig {
                        transa: cublasOperation_t::CUBLAS_OP_N,
                        transb: cublasOperation_t::CUBLAS_OP_N,
                        m: layer.m as i32,
                        n: rows as i32,
                        k: layer.k as i32,
                        alpha: f16::ONE,
                        lda: layer.m as i32,
                        ldb: layer.k as i32,
                        beta: f16::ZERO,
                        ldc: layer.m as i32,
                    };
                    let (src, dst) = if i % 2 == 0 { (&*a, &mut *b) } else { (&*b, &mut *a) };
                    // SAFETY: as for float32, in half precision.
                    unsafe { self.blas.gemm(cfg, w, src, dst) }.map_err(err)?;
                    let n = rows * layer.m;
                    let (m, nn, act) = (layer.m as i32, n as i64, layer.activation as i32);
                    let mut launch = self.stream.launch_builder(&self.kernels.bias_act_f16);
                    launch.arg(&mut *dst).arg(&layer.bias).arg(&m).arg(&nn).arg(&act);
                    // SAFETY: n values of dst, m of bias.
                    unsafe { launch.launch(blocks(n)) }.map_err(err)?;
                }
                let result = if self.layers.len() % 2 == 1 { &*b } else { &*a };
                let n = (rows * last_m) as i64;
                let mut launch = self.stream.launch_builder(&self.kernels.to_f32);
                launch.arg(result).arg(&mut *dev_out).arg(&n);
                // SAFETY: rows × last_m values in and out.
                unsafe { launch.launch(blocks(rows * last_m)) }.map_err(err)?;
            }
        }
        if self.softmax {
            let (m, r) = (last_m as i32, rows as i32);
            let mut launch = self.stream.launch_builder(&self.kernels.softmax_rows);
            launch.arg(&mut *dev_out).arg(&m).arg(&r);
            // SAFETY: rows rows of last_m values.
            unsafe { launch.launch(blocks(rows)) }.map_err(err)?;
        }
        out.resize(rows * last_m, 0.0);
        self.stream.memcpy_dtoh(&dev_out.slice(..rows * last_m), out.as_mut_slice()).map_err(err)?;
        self.stream.synchronize().map_err(err)?;
        Ok(())
    }
}

impl NativeModel {
    /// This plan on GPU `device` in `precision` (feature `gpu`); `Err` says why not.
    pub fn gpu(&self, device: usize, precision: Precision) -> Result<GpuMlp, String> {
        GpuMlp::new(self, device, precision)
    }
}
