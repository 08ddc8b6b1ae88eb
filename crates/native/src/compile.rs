//! From an ONNX graph to a native plan: the nodes the declared output needs, in order, each checked
//! (operator, every attribute, the shapes of its inputs) and turned into a kernel; constants folded
//! in. Every refusal names the node and what quorum does not support about it.

use std::collections::HashMap;

use super::attributes::{attr_f, attr_i, attr_ints, attribute, known_attributes, require_i};
use super::dense::{Binary, BinaryOp, Dense, Operand, Unary};
use super::ml::MlOp;
use super::trees::TreeEnsemble;
use super::{Kernel, NativeModel, Step};
use quorum_onnx::proto::tensor_proto::DataType;
use quorum_onnx::proto::{NodeProto, TensorProto};
use quorum_onnx::{self as onnx, ML_DOMAIN};

type Refusal = String;

/// A constant known at compile time.
#[derive(Debug, Clone)]
pub(super) struct Constant {
    pub dims: Vec<i64>,
    pub values: ConstValues,
}

#[derive(Debug, Clone)]
pub(super) enum ConstValues {
    Float(Vec<f32>),
    Int(Vec<i64>),
}

impl Constant {
    fn floats(&self) -> Option<&[f32]> {
        match &self.values {
            ConstValues::Float(v) => Some(v),
            ConstValues::Int(_) => None,
        }
    }

    fn ints(&self) -> Option<&[i64]> {
        match &self.values {
            ConstValues::Int(v) => Some(v),
            ConstValues::Float(_) => None,
        }
    }

    fn len(&self) -> usize {
        match &self.values {
            ConstValues::Float(v) => v.len(),
            ConstValues::Int(v) => v.len(),
        }
    }
}

/// A value while compiling: computed per call (a slot of `width` per row; rank 1 is `[rows]`), or
/// a constant.
#[derive(Debug, Clone)]
enum Value {
    Runtime { slot: usize, rank: u8 },
    Const(Constant),
}

struct Builder {
    values: HashMap<String, Value>,
    widths: Vec<usize>,
    steps: Vec<Step>,
    operators: Vec<String>,
    /// The default domain's opset (operators changed meaning across versions).
    opset: i64,
    /// How many needed nodes (and the declared output) read each value: a value read once may be
    /// folded into the step that reads it.
    uses: HashMap<String, usize>,
}

/// Compiles the part of `bytes` that `output` needs, for an input of `features` columns.
pub(crate) fn compile(bytes: &[u8], output: &str, features: usize) -> Result<NativeModel, Refusal> {
    let model = onnx::decode(bytes).map_err(|e| e.to_string())?;
    let graph = model.graph.as_ref().ok_or("the model has no graph")?;
    if let Some(f) = model.functions.first() {
        return Err(format!("the model defines local function {:?}", f.name()));
    }
    for o in &model.opset_import {
        let domain = o.domain();
        if !(domain.is_empty() || domain == "ai.onnx" || domain == ML_DOMAIN) {
            return Err(format!("it imports operator domain {domain:?}"));
        }
    }
    let mut b = Builder {
        values: HashMap::new(),
        widths: vec![features],
        steps: Vec::new(),
        operators: Vec::new(),
        opset: onnx::default_opset(&model).unwrap_or(1),
        uses: HashMap::new(),
    };
    for t in &graph.initializer {
        b.values.insert(t.name().to_string(), Value::Const(constant(t)?));
    }
    let inputs: Vec<_> = graph.input.iter().filter(|i| !b.values.contains_key(i.name())).collect();
    let [input] = inputs.as_slice() else {
        return Err(format!("it has {} graph inputs; native plans take one", inputs.len()));
    };
    check_input_type(input, features)?;
    b.values.insert(input.name().to_string(), Value::Runtime { slot: 0, rank: 2 });
    let needed = onnx::nodes_needed_for(&graph.node, output);
    for (node, _) in graph.node.iter().zip(&needed).filter(|(_, keep)| **keep) {
        for name in &node.input {
            *b.uses.entry(name.clone()).or_default() += 1;
        }
    }
    *b.uses.entry(output.to_string()).or_default() += 1;
    for (node, _) in graph.node.iter().zip(&needed).filter(|(_, keep)| **keep) {
        if onnx::has_subgraph(node) {
            return Err(format!("node {:?} ({}) has a subgraph", node.name(), node.op_type()));
        }
        b.node(node).map_err(|why| format!("node {:?} ({}): {why}", node.name(), node.op_type()))?;
    }
    let slot = match b.values.get(output) {
        Some(Value::Runtime { slot, .. }) => *slot,
        Some(Value::Const(_)) => return Err(format!("output {output:?} is a constant")),
        None => return Err(format!("output {output:?} is not computed by a supported operator")),
    };
    let mut offsets = vec![0; b.widths.len()];
    let mut arena_width = 0;
    for (s, w) in b.widths.iter().enumerate().skip(1) {
        offsets[s] = arena_width;
        arena_width += w;
    }
    Ok(NativeModel { steps: b.steps, widths: b.widths, offsets, arena_width, output: slot, operators: b.operators })
}

fn check_input_type(input: &quorum_onnx::proto::ValueInfoProto, features: usize) -> Result<(), Refusal> {
    use quorum_onnx::proto::type_proto::Value as T;
    let Some(T::TensorType(t)) = input.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
        return Err(format!("input {:?} is not a tensor", input.name()));
    };
    if t.elem_type() != DataType::Float as i32 {
        return Err(format!("input {:?} is not float32", input.name()));
    }
    if let Some(shape) = &t.shape {
        if shape.dim.len() != 2 {
            return Err(format!("input {:?} has rank {}, not [batch, features]", input.name(), shape.dim.len()));
        }
        // A fixed batch size is fine: every supported operator keeps rows independent (a Reshape
        // naming the batch size is refused below), and the probe runs ONNX Runtime in calls of that
        // size. The plan then takes any number of rows.
        use quorum_onnx::proto::tensor_shape_proto::dimension::Value as D;
        if let Some(D::DimValue(w)) = shape.dim[1].value {
            if w != features as i64 {
                return Err(format!("input {:?} has {w} columns, {features} features were declared", input.name()));
            }
        }
    }
    Ok(())
}

fn constant(t: &TensorProto) -> Result<Constant, Refusal> {
    let dims = t.dims.clone();
    let count = onnx::element_count(t).ok_or("a tensor with a negative dimension")?;
    let bad = || format!("constant {:?} could not be read", t.name());
    let values = match DataType::try_from(t.data_type()).unwrap_or(DataType::Undefined) {
        DataType::Float => ConstValues::Float(onnx::float_values(t).ok_or_else(bad)?),
        DataType::Int64 => {
            let v: Vec<i64> = match &t.raw_data {
                Some(raw) => raw.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect(),
                None => t.int64_data.clone(),
            };
            ConstValues::Int(v)
        }
        DataType::Int32 => {
            let v: Vec<i64> = match &t.raw_data {
                Some(raw) => {
                    raw.chunks_exact(4).map(|c| i64::from(i32::from_le_bytes(c.try_into().unwrap_or([0; 4])))).collect()
                }
                None => t.int32_data.iter().map(|v| i64::from(*v)).collect(),
            };
            ConstValues::Int(v)
        }
        other => return Err(format!("constant {:?} has type {other:?}", t.name())),
    };
    let c = Constant { dims, values };
    if c.len() != count {
        return Err(bad());
    }
    Ok(c)
}

impl Builder {
    fn value(&self, name: &str) -> Result<&Value, Refusal> {
        self.values.get(name).ok_or_else(|| format!("input {name:?} is not computed natively"))
    }

    /// A per-call value: (slot, width, rank).
    fn runtime(&self, name: &str) -> Result<(usize, usize, u8), Refusal> {
        match self.value(name)? {
            Value::Runtime { slot, rank } => Ok((*slot, self.widths[*slot], *rank)),
            Value::Const(_) => Err(format!("input {name:?} is a constant where a computed value is expected")),
        }
    }

    fn constant(&self, name: &str) -> Result<&Constant, Refusal> {
        match self.value(name)? {
            Value::Const(c) => Ok(c),
            Value::Runtime { .. } => Err(format!("input {name:?} must be a constant")),
        }
    }

    fn optional_constant(&self, node: &NodeProto, index: usize) -> Result<Option<&Constant>, Refusal> {
        match node.input.get(index).filter(|n| !n.is_empty()) {
            Some(name) => self.constant(name).map(Some),
            None => Ok(None),
        }
    }

    fn emit(
        &mut self,
        node: &NodeProto,
        kernel: Kernel,
        inputs: Vec<usize>,
        width: usize,
        rank: u8,
    ) -> Result<(), Refusal> {
        let out = node.output.first().filter(|o| !o.is_empty()).ok_or("no output")?;
        if width == 0 {
            return Err("an empty output".into());
        }
        let slot = self.widths.len();
        self.widths.push(width);
        self.steps.push(Step { kernel, inputs, output: slot });
        self.values.insert(out.clone(), Value::Runtime { slot, rank });
        let op = node.op_type().to_string();
        if !self.operators.contains(&op) {
            self.operators.push(op);
        }
        Ok(())
    }

    /// The node's output is its input (Identity, a float Cast, a reshape that keeps rows).
    fn alias(&mut self, node: &NodeProto, value: Value) -> Result<(), Refusal> {
        let out = node.output.first().filter(|o| !o.is_empty()).ok_or("no output")?;
        self.values.insert(out.clone(), value);
        let op = node.op_type().to_string();
        if !self.operators.contains(&op) {
            self.operators.push(op);
        }
        Ok(())
    }

    fn node(&mut self, node: &NodeProto) -> Result<(), Refusal> {
        let op = node.op_type();
        if node.domain() == ML_DOMAIN {
            return self.ml_node(node, op);
        }
        if !onnx::is_default_domain(node) {
            return Err(format!("domain {:?} is not supported", node.domain()));
        }
        let input = |i: usize| node.input.get(i).map(String::as_str).unwrap_or("");
        match op {
            "Identity" => {
                known_attributes(node, &[])?;
                let v = self.value(input(0))?.clone();
                self.alias(node, v)
            }
            "Dropout" => {
                // Inference: the identity. A training_mode input must be a constant false.
                known_attributes(node, &["ratio", "is_test", "seed"])?;
                if let Some(mode) = self.optional_constant(node, 2)? {
                    if mode.ints().is_none_or(|v| v.iter().any(|m| *m != 0)) {
                        return Err("training_mode is not false".into());
                    }
                }
                let v = self.value(input(0))?.clone();
                self.alias(node, v)
            }
            "Cast" => {
                known_attributes(node, &["to", "saturate"])?;
                let to = attr_i(node, "to").ok_or("no 'to'")?;
                match (self.value(input(0))?.clone(), to) {
                    (Value::Runtime { .. }, t) if t == DataType::Float as i64 => {
                        let v = self.value(input(0))?.clone();
                        self.alias(node, v)
                    }
                    (Value::Const(c), t) if t == DataType::Float as i64 => {
                        let floats = match &c.values {
                            ConstValues::Float(v) => v.clone(),
                            ConstValues::Int(v) => v.iter().map(|x| *x as f32).collect(),
                        };
                        self.alias(node, Value::Const(Constant { dims: c.dims, values: ConstValues::Float(floats) }))
                    }
                    (Value::Const(c), t) if t == DataType::Int64 as i64 && c.ints().is_some() => {
                        self.alias(node, Value::Const(c))
                    }
                    (_, t) => Err(format!("a cast to type {t} (only float32 is computed natively)")),
                }
            }
            "Constant" => {
                known_attributes(node, &["value", "value_float", "value_floats", "value_int", "value_ints"])?;
                let c = if let Some(t) = attribute(node, "value").and_then(|a| a.t.as_ref()) {
                    constant(t)?
                } else if let Some(f) = attr_f(node, "value_float") {
                    Constant { dims: vec![], values: ConstValues::Float(vec![f]) }
                } else if let Some(a) = attribute(node, "value_floats") {
                    Constant { dims: vec![a.floats.len() as i64], values: ConstValues::Float(a.floats.clone()) }
                } else if let Some(i) = attr_i(node, "value_int") {
                    Constant { dims: vec![], values: ConstValues::Int(vec![i]) }
                } else if let Some(a) = attribute(node, "value_ints") {
                    Constant { dims: vec![a.ints.len() as i64], values: ConstValues::Int(a.ints.clone()) }
                } else {
                    return Err("a constant of a kind not supported".into());
                };
                self.alias(node, Value::Const(c))
            }
            "MatMul" => {
                known_attributes(node, &[])?;
                let (a, k, rank) = self.runtime(input(0))?;
                if rank != 2 {
                    return Err("the left operand is not [batch, k]".into());
                }
                let w = self.constant(input(1))?;
                let weights = w.floats().ok_or("integer weights")?;
                let (m, out_rank) = match w.dims.as_slice() {
                    [kk, m] if *kk as usize == k => (*m as usize, 2),
                    [kk] if *kk as usize == k => (1, 1),
                    dims => return Err(format!("weights of shape {dims:?} for {k} columns")),
                };
                let kernel = Dense::MatMul { k, m, w: weights.to_vec(), bias: None };
                self.emit(node, Kernel::Dense(kernel), vec![a], m, out_rank)
            }
            "Gemm" => self.gemm(node),
            "Add" | "Sub" | "Mul" | "Div" => {
                known_attributes(node, &["broadcast"])?;
                let op = match op {
                    "Add" => BinaryOp::Add,
                    "Sub" => BinaryOp::Sub,
                    "Mul" => BinaryOp::Mul,
                    _ => BinaryOp::Div,
                };
                self.binary(node, op, input(0), input(1))
            }
            "Sum" => {
                known_attributes(node, &[])?;
                match node.input.as_slice() {
                    [one] => {
                        let v = self.value(one)?.clone();
                        self.alias(node, v)
                    }
                    [a, b] => self.binary(node, BinaryOp::Add, a, b),
                    _ => Err("Sum of more than two inputs".into()),
                }
            }
            "Relu" | "Sigmoid" | "Tanh" | "Exp" | "Log" | "Abs" | "Neg" | "Sqrt" | "Reciprocal" | "Softplus" => {
                known_attributes(node, &[])?;
                let unary = match op {
                    "Relu" => Unary::Relu,
                    "Sigmoid" => Unary::Sigmoid,
                    "Tanh" => Unary::Tanh,
                    "Exp" => Unary::Exp,
                    "Log" => Unary::Log,
                    "Abs" => Unary::Abs,
                    "Neg" => Unary::Neg,
                    "Sqrt" => Unary::Sqrt,
                    "Softplus" => Unary::Softplus,
                    _ => Unary::Reciprocal,
                };
                self.unary(node, unary)
            }
            "LeakyRelu" => {
                known_attributes(node, &["alpha"])?;
                self.unary(node, Unary::LeakyRelu(attr_f(node, "alpha").unwrap_or(0.01)))
            }
            "Clip" => {
                let (lo, hi) = if self.opset < 11 {
                    known_attributes(node, &["min", "max"])?;
                    (attr_f(node, "min").unwrap_or(f32::MIN), attr_f(node, "max").unwrap_or(f32::MAX))
                } else {
                    known_attributes(node, &[])?;
                    let bound = |c: Option<&Constant>, default: f32| -> Result<f32, Refusal> {
                        match c {
                            None => Ok(default),
                            Some(c) => {
                                c.floats().and_then(|v| v.first().copied()).ok_or("a bound that is not a float".into())
                            }
                        }
                    };
                    (
                        bound(self.optional_constant(node, 1)?, f32::MIN)?,
                        bound(self.optional_constant(node, 2)?, f32::MAX)?,
                    )
                };
                self.unary(node, Unary::Clip(lo, hi))
            }
            "Softmax" | "LogSoftmax" => {
                known_attributes(node, &["axis"])?;
                let (a, w, rank) = self.runtime(input(0))?;
                let axis = attr_i(node, "axis").unwrap_or(if self.opset < 13 { 1 } else { -1 });
                if rank != 2 || !(axis == 1 || axis == -1) {
                    return Err(format!("axis {axis} on a value of rank {rank} is not across one row"));
                }
                let kernel = Dense::Softmax { log: op == "LogSoftmax" };
                self.emit(node, Kernel::Dense(kernel), vec![a], w, 2)
            }
            "Concat" => {
                known_attributes(node, &["axis"])?;
                let axis = attr_i(node, "axis").ok_or("no axis")?;
                let mut slots = Vec::new();
                let mut width = 0;
                for name in &node.input {
                    let (s, w, rank) = self.runtime(name)?;
                    if rank != 2 || !(axis == 1 || axis == -1) {
                        return Err(format!("axis {axis} is not the columns of [batch, columns] values"));
                    }
                    slots.push(s);
                    width += w;
                }
                self.emit(node, Kernel::Dense(Dense::Concat), slots, width, 2)
            }
            "Gather" => {
                known_attributes(node, &["axis"])?;
                let (a, w, rank) = self.runtime(input(0))?;
                let axis = attr_i(node, "axis").unwrap_or(0);
                if rank != 2 || !(axis == 1 || axis == -1) {
                    return Err(format!("axis {axis}: only columns of [batch, columns] values are gathered"));
                }
                let idx = self.constant(input(1))?;
                let (columns, out_rank) = columns(idx, w)?;
                let width = columns.len();
                self.emit(node, Kernel::Dense(Dense::Gather { columns }), vec![a], width, out_rank)
            }
            "Reshape" => {
                known_attributes(node, &["allowzero"])?;
                require_i(node, "allowzero", &[0])?;
                let (slot, w, rank) = self.runtime(input(0))?;
                let shape = self.constant(input(1))?.ints().ok_or("a shape that is not integers")?.to_vec();
                let rank_out = match shape.as_slice() {
                    [-1] if w == 1 => 1,
                    [first, second]
                        if (*first == -1 || *first == 0) && (*second == w as i64 || (*first == 0 && *second == -1)) =>
                    {
                        2
                    }
                    [-1, 1] if w == 1 => 2,
                    _ => {
                        return Err(format!(
                            "shape {shape:?} for a value of rank {rank} and width {w} does not keep rows"
                        ))
                    }
                };
                self.alias(node, Value::Runtime { slot, rank: rank_out })
            }
            "Flatten" => {
                known_attributes(node, &["axis"])?;
                let (slot, _, _) = self.runtime(input(0))?;
                require_i(node, "axis", &[1])?;
                self.alias(node, Value::Runtime { slot, rank: 2 })
            }
            "Squeeze" | "Unsqueeze" => {
                let axes = if self.opset < 13 {
                    known_attributes(node, &["axes"])?;
                    attr_ints(node, "axes")
                } else {
                    known_attributes(node, &[])?;
                    match self.optional_constant(node, 1)? {
                        Some(c) => c.ints().ok_or("axes that are not integers")?.to_vec(),
                        None => Vec::new(),
                    }
                };
                let (slot, w, rank) = self.runtime(input(0))?;
                let to = match (op, rank, axes.as_slice()) {
                    ("Squeeze", 2, [1] | [-1]) if w == 1 => 1,
                    ("Unsqueeze", 1, [1] | [-1]) => 2,
                    _ => return Err(format!("axes {axes:?} on a value of rank {rank} would move the batch axis")),
                };
                self.alias(node, Value::Runtime { slot, rank: to })
            }
            other => Err(format!("operator {other} has no native kernel")),
        }
    }

    fn unary(&mut self, node: &NodeProto, unary: Unary) -> Result<(), Refusal> {
        let (a, w, rank) = self.runtime(node.input.first().map(String::as_str).unwrap_or(""))?;
        self.emit(node, Kernel::Dense(Dense::Unary(unary)), vec![a], w, rank)
    }

    fn binary(&mut self, node: &NodeProto, op: BinaryOp, lhs: &str, rhs: &str) -> Result<(), Refusal> {
        if attr_i(node, "axis").is_some() {
            return Err("a broadcast axis".into());
        }
        let mut slots = Vec::new();
        let mut widths = Vec::new();
        let mut rank_out = 1u8;
        let mut operands = Vec::new();
        for name in [lhs, rhs] {
            match self.value(name)?.clone() {
                Value::Runtime { slot, rank } => {
                    rank_out = rank_out.max(rank);
                    widths.push(Some((self.widths[slot], rank)));
                    operands.push(Operand::Input(slots.len()));
                    slots.push(slot);
                }
                Value::Const(c) => {
                    widths.push(None);
                    operands.push(Operand::Const(c.floats().ok_or("an integer operand")?.to_vec()));
                    // A constant of rank 2 makes the result rank 2.
                    if c.dims.len() >= 2 {
                        rank_out = 2;
                    }
                    // Only constants that broadcast along the row: [], [1], [w], [1, w].
                    if c.dims.len() > 2 || (c.dims.len() == 2 && c.dims[0] != 1) {
                        return Err(format!("a constant of shape {:?} does not broadcast along rows", c.dims));
                    }
                }
            }
        }
        if slots.is_empty() {
            return Err("both operands are constants".into());
        }
        let width = widths
            .iter()
            .flatten()
            .map(|(w, _)| *w)
            .chain(operands.iter().filter_map(|o| match o {
                Operand::Const(v) => Some(v.len()),
                Operand::Input(_) => None,
            }))
            .max()
            .unwrap_or(1);
        for (w, o) in widths.iter().zip(&operands) {
            let (ow, orank) = match (w, o) {
                (Some((w, r)), _) => (*w, *r),
                (None, Operand::Const(v)) => (v.len(), 2),
                (None, Operand::Input(_)) => unreachable!("a runtime operand has a width"),
            };
            if ow != 1 && ow != width {
                return Err(format!("operands of widths {ow} and {width} do not broadcast"));
            }
            // A [rows] value against a wider one would broadcast along the batch axis.
            if orank == 1 && width != 1 && matches!(o, Operand::Input(_)) {
                return Err("a 1-D value against a 2-D one broadcasts across the batch".into());
            }
        }
        if let BinaryOp::Add = op {
            if self.fold_bias(node, [lhs, rhs], &operands, width, rank_out)? {
                return Ok(());
            }
        }
        let kernel = Dense::Binary(Binary { op, lhs: operands.remove(0), rhs: operands.remove(0) });
        self.emit(node, Kernel::Dense(kernel), slots, width, rank_out)
    }

    /// `MatMul` then `Add` of a constant row, the product read by nothing else (as skl2onnx writes
    /// a dense layer): the row becomes the product's bias, saving a pass over the block. Returns
    /// whether it folded.
    fn fold_bias(
        &mut self,
        node: &NodeProto,
        names: [&str; 2],
        operands: &[Operand],
        width: usize,
        rank: u8,
    ) -> Result<bool, Refusal> {
        let (runtime, constant) = match operands {
            [Operand::Input(_), Operand::Const(c)] => (names[0], c),
            [Operand::Const(c), Operand::Input(_)] => (names[1], c),
            _ => return Ok(false),
        };
        let Some(Value::Runtime { slot, .. }) = self.values.get(runtime) else { return Ok(false) };
        let slot = *slot;
        let read_once = self.uses.get(runtime) == Some(&1);
        let Some(last) = self.steps.last_mut().filter(|s| s.output == slot && read_once) else { return Ok(false) };
        let Kernel::Dense(Dense::MatMul { m, bias: bias @ None, .. }) = &mut last.kernel else { return Ok(false) };
        if *m != width {
            return Ok(false);
        }
        *bias = Some(if constant.len() == 1 { vec![constant[0]; width] } else { constant.clone() });
        self.alias(node, Value::Runtime { slot, rank })?;
        Ok(true)
    }

    fn gemm(&mut self, node: &NodeProto) -> Result<(), Refusal> {
        known_attributes(node, &["alpha", "beta", "transA", "transB", "broadcast"])?;
        require_i(node, "transA", &[0])?;
        let input = |i: usize| node.input.get(i).map(String::as_str).unwrap_or("");
        let (a, k, rank) = self.runtime(input(0))?;
        if rank != 2 {
            return Err("A is not [batch, k]".into());
        }
        let alpha = attr_f(node, "alpha").unwrap_or(1.0);
        let beta = attr_f(node, "beta").unwrap_or(1.0);
        let b = self.constant(input(1))?;
        let values = b.floats().ok_or("integer weights")?;
        let trans_b = attr_i(node, "transB").unwrap_or(0) != 0;
        let [r, c] = b.dims.as_slice() else { return Err(format!("B of shape {:?}", b.dims)) };
        let (rows_b, cols_b) = (*r as usize, *c as usize);
        let (kk, m) = if trans_b { (cols_b, rows_b) } else { (rows_b, cols_b) };
        if kk != k {
            return Err(format!("B of shape {:?} for {k} columns", b.dims));
        }
        // Stored k × m, alpha folded in.
        let mut w = vec![0f32; k * m];
        for i in 0..k {
            for j in 0..m {
                let v = if trans_b { values[j * k + i] } else { values[i * m + j] };
                w[i * m + j] = alpha * v;
            }
        }
        let bias = match self.optional_constant(node, 2)? {
            None => None,
            Some(c) => {
                if c.dims.len() == 2 && c.dims[0] != 1 {
                    return Err(format!("C of shape {:?} does not broadcast along rows", c.dims));
                }
                let v = c.floats().ok_or("an integer C")?;
                match v.len() {
                    1 => Some(vec![beta * v[0]; m]),
                    n if n == m => Some(v.iter().map(|x| beta * x).collect()),
                    n => return Err(format!("C of {n} values for {m} columns")),
                }
            }
        };
        self.emit(node, Kernel::Dense(Dense::MatMul { k, m, w, bias }), vec![a], m, 2)
    }

    fn ml_node(&mut self, node: &NodeProto, op: &str) -> Result<(), Refusal> {
        let input = node.input.first().map(String::as_str).unwrap_or("");
        match op {
            "TreeEnsembleClassifier" | "TreeEnsembleRegressor" => {
                let (a, w, rank) = self.runtime(input)?;
                if rank != 2 {
                    return Err("the input is not [batch, features]".into());
                }
                let classifier = op == "TreeEnsembleClassifier";
                let trees = TreeEnsemble::compile(node, classifier, w)?;
                let width = trees.outputs();
                // A classifier's scores are its second output; its first (labels) is not computed.
                let out_index = usize::from(classifier);
                let out = node.output.get(out_index).filter(|o| !o.is_empty()).ok_or("no scores output")?.clone();
                self.emit_named(node, &out, Kernel::Trees(Box::new(trees)), vec![a], width)
            }
            "LinearClassifier" | "LinearRegressor" | "Scaler" | "Normalizer" | "Imputer" => {
                let (a, w, rank) = self.runtime(input)?;
                if rank != 2 && op != "Scaler" && op != "Imputer" {
                    return Err("the input is not [batch, features]".into());
                }
                let kernel = MlOp::compile(node, op, w)?;
                let width = kernel.outputs(w);
                let out_index = usize::from(op == "LinearClassifier");
                let out = node.output.get(out_index).filter(|o| !o.is_empty()).ok_or("no scores output")?.clone();
                self.emit_named(node, &out, Kernel::Ml(kernel), vec![a], width)
            }
            "ArrayFeatureExtractor" => {
                known_attributes(node, &[])?;
                let (a, w, rank) = self.runtime(input)?;
                if rank != 2 {
                    return Err("the input is not [batch, columns]".into());
                }
                let idx = self.constant(node.input.get(1).map(String::as_str).unwrap_or(""))?;
                let (columns, _) = columns(idx, w)?;
                let width = columns.len();
                let out = node.output.first().ok_or("no output")?.clone();
                self.emit_named(node, &out, Kernel::Dense(Dense::Gather { columns }), vec![a], width)
            }
            other => Err(format!("operator ai.onnx.ml {other} has no native kernel")),
        }
    }

    fn emit_named(
        &mut self,
        node: &NodeProto,
        out: &str,
        kernel: Kernel,
        inputs: Vec<usize>,
        width: usize,
    ) -> Result<(), Refusal> {
        let slot = self.widths.len();
        self.widths.push(width);
        self.steps.push(Step { kernel, inputs, output: slot });
        self.values.insert(out.to_string(), Value::Runtime { slot, rank: 2 });
        let op = node.op_type().to_string();
        if !self.operators.contains(&op) {
            self.operators.push(op);
        }
        Ok(())
    }
}

/// Column indices from a constant (negative counts from the end); a scalar index drops the axis.
fn columns(idx: &Constant, width: usize) -> Result<(Vec<usize>, u8), Refusal> {
    let ints = idx.ints().ok_or("indices that are not integers")?;
    let rank = if idx.dims.is_empty() { 1 } else { 2 };
    if idx.dims.len() > 1 {
        return Err(format!("indices of shape {:?}", idx.dims));
    }
    let columns = ints
        .iter()
        .map(|&i| {
            let c = if i < 0 { i + width as i64 } else { i };
            usize::try_from(c).ok().filter(|c| *c < width).ok_or(format!("index {i} outside {width} columns"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((columns, rank))
}
