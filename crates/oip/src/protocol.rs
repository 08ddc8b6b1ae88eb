//! The Open Inference Protocol v2 (KServe v2, Triton's HTTP API) as a client speaks it: model and
//! server metadata read at registration, inference requests in JSON or with the binary tensor data
//! extension (a JSON header, its length in `Inference-Header-Content-Length`, then raw
//! little-endian tensors), and answers decoded into float32 whatever numeric type the server chose.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// A tensor as a server's model metadata describes it (`shape` -1 for a free dimension).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorMetadata {
    /// The tensor's name.
    pub name: String,
    /// Its datatype (`FP32`, `INT64`, `BYTES`, ...); empty when the server leaves it out.
    #[serde(default)]
    pub datatype: String,
    /// Its dimensions.
    #[serde(default)]
    pub shape: Vec<i64>,
}

/// `GET /v2/models/NAME[/versions/V]`: what inputs and outputs the model declares (MLServer lists
/// none unless its model settings declare them).
#[derive(Debug, Clone, Deserialize)]
pub struct ModelMetadata {
    /// The inputs the model takes.
    #[serde(default)]
    pub inputs: Vec<TensorMetadata>,
    /// The outputs it answers with.
    #[serde(default)]
    pub outputs: Vec<TensorMetadata>,
}

/// `GET /v2`: the extensions a server supports.
#[derive(Debug, Clone, Deserialize)]
pub struct ServerMetadata {
    /// The protocol extensions named (`binary_tensor_data`, ...).
    #[serde(default)]
    pub extensions: Vec<String>,
}

/// The input datatypes quorum sends (features are float32; others converted once per request).
pub fn check_input_datatype(datatype: &str) -> Result<(), String> {
    match datatype {
        "FP32" | "FP64" | "INT64" | "INT32" => Ok(()),
        other => Err(format!(
            "its input takes {other}; quorum sends FP32, FP64, INT64 or INT32 (serve a model that takes one of \
             those, for example with a cast to float32 at its input)"
        )),
    }
}

/// How the features go out: one `[rows, features]` tensor, or one tensor per feature named as the
/// feature (`[rows]` or `[rows, 1]`, as a pipeline converted from DataFrame columns or `quorum
/// serve`'s ensembles take them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// One `[rows, features]` tensor.
    Single {
        /// The model's input name.
        name: String,
    },
    /// One tensor per feature.
    PerFeature {
        /// The inputs' names, in feature order.
        names: Vec<String>,
        /// 1 (`[rows]`) or 2 (`[rows, 1]`).
        rank: usize,
    },
}

/// Writes an inference request for `rows` rows of `width` features into `head` (JSON) and, with
/// `binary`, the tensors' bytes into `tail`.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// How the features go out.
    pub layout: &'a Layout,
    /// The input datatype the model takes (see [`check_input_datatype`]).
    pub datatype: &'a str,
    /// The one output asked for.
    pub output: &'a str,
    /// Binary tensor extension (inputs and the output) instead of JSON numbers.
    pub binary: bool,
}

impl Request<'_> {
    /// Writes the request for `rows` rows of `width` features in `input` (row-major): the JSON
    /// into `head`, and with `binary` the tensors' bytes into `tail` (both cleared first).
    pub fn encode(&self, input: &[f32], rows: usize, width: usize, head: &mut String, tail: &mut Vec<u8>) {
        head.clear();
        tail.clear();
        head.push_str("{\"inputs\":[");
        match self.layout {
            Layout::Single { name } => {
                self.tensor(head, tail, name, &[rows, width], input.iter().copied());
            }
            Layout::PerFeature { names, rank } => {
                for (f, name) in names.iter().enumerate() {
                    if f > 0 {
                        head.push(',');
                    }
                    let shape: &[usize] = if *rank == 1 { &[rows] } else { &[rows, 1] };
                    let column = (0..rows).map(|r| input[r * width + f]);
                    self.tensor(head, tail, name, shape, column);
                }
            }
        }
        head.push_str("],\"outputs\":[{\"name\":");
        push_json_string(head, self.output);
        if self.binary {
            head.push_str(",\"parameters\":{\"binary_data\":true}");
        }
        head.push_str("}]}");
    }

    fn tensor(
        &self,
        head: &mut String,
        tail: &mut Vec<u8>,
        name: &str,
        shape: &[usize],
        values: impl Iterator<Item = f32>,
    ) {
        head.push_str("{\"name\":");
        push_json_string(head, name);
        head.push_str(",\"shape\":[");
        for (i, d) in shape.iter().enumerate() {
            if i > 0 {
                head.push(',');
            }
            let _ = write!(head, "{d}");
        }
        let _ = write!(head, "],\"datatype\":\"{}\"", self.datatype);
        if self.binary {
            let start = tail.len();
            for v in values {
                match self.datatype {
                    "FP64" => tail.extend_from_slice(&f64::from(v).to_le_bytes()),
                    "INT64" => tail.extend_from_slice(&(v as i64).to_le_bytes()),
                    "INT32" => tail.extend_from_slice(&(v as i32).to_le_bytes()),
                    _ => tail.extend_from_slice(&v.to_le_bytes()),
                }
            }
            let _ = write!(head, ",\"parameters\":{{\"binary_data_size\":{}}}}}", tail.len() - start);
        } else {
            head.push_str(",\"data\":[");
            let mut buffer = ryu::Buffer::new();
            for (i, v) in values.enumerate() {
                if i > 0 {
                    head.push(',');
                }
                match self.datatype {
                    "INT64" | "INT32" => {
                        let _ = write!(head, "{}", v as i64);
                    }
                    "FP64" => head.push_str(buffer.format_finite(f64::from(v))),
                    _ => head.push_str(buffer.format_finite(v)),
                }
            }
            head.push_str("]}");
        }
    }
}

/// A JSON string literal (names are quorum names, but a server's may hold anything).
pub fn push_json_string(out: &mut String, s: &str) {
    out.push_str(&serde_json::Value::String(s.to_string()).to_string());
}

#[derive(Debug, Deserialize)]
struct InferResponse {
    #[serde(default)]
    outputs: Vec<OutputTensor>,
}

#[derive(Debug, Deserialize)]
struct OutputTensor {
    name: String,
    #[serde(default)]
    datatype: String,
    #[serde(default)]
    shape: Vec<i64>,
    #[serde(default)]
    data: Option<serde_json::Value>,
    #[serde(default)]
    parameters: Option<serde_json::Map<String, serde_json::Value>>,
}

/// One output of an answer, as float32: `rows × columns` values, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    /// The values, converted to float32.
    pub values: Vec<f32>,
    /// Values per row.
    pub columns: usize,
    /// The datatype the server answered in.
    pub datatype: String,
    /// The shape the server answered with.
    pub shape: Vec<i64>,
}

/// Reads output `name` from an answer's body (`header_length`: the binary extension's JSON
/// header length, when the server used it), checking it holds `rows` rows.
pub fn decode(body: &[u8], header_length: Option<usize>, name: &str, rows: usize) -> Result<Output, String> {
    let (header, mut binary) = match header_length {
        Some(n) if n <= body.len() => (&body[..n], &body[n..]),
        Some(n) => return Err(format!("Inference-Header-Content-Length {n} is past the body's {} bytes", body.len())),
        None => (body, &[][..]),
    };
    let response: InferResponse =
        serde_json::from_slice(header).map_err(|e| format!("the answer is not an inference response: {e}"))?;
    let mut found = None;
    for tensor in response.outputs {
        let size = tensor.parameters.as_ref().and_then(|p| p.get("binary_data_size")).and_then(|v| v.as_u64());
        // Binary tensors follow the header in the order of the outputs.
        let bytes = match size {
            Some(size) => {
                let size = usize::try_from(size).unwrap_or(usize::MAX);
                if size > binary.len() {
                    return Err(format!("output {:?}: binary_data_size {size} is past the body's end", tensor.name));
                }
                let (mine, rest) = binary.split_at(size);
                binary = rest;
                Some(mine)
            }
            None => None,
        };
        if tensor.name == name {
            found = Some((tensor, bytes));
        }
    }
    let Some((tensor, bytes)) = found else { return Err(format!("the answer has no output {name:?}")) };
    let values = match bytes {
        Some(bytes) => from_bytes(&tensor.datatype, bytes)?,
        None => {
            let data =
                tensor.data.as_ref().ok_or_else(|| format!("output {name:?} has neither data nor binary data"))?;
            if !NUMERIC.contains(&tensor.datatype.as_str()) {
                return Err(format!("output {name:?}: datatype {:?} is not a number quorum reads", tensor.datatype));
            }
            let mut values = Vec::new();
            flatten(data, &mut values).map_err(|e| format!("output {name:?}: {e}"))?;
            values
        }
    };
    let expected: i64 = tensor.shape.iter().product();
    if tensor.shape.iter().any(|&d| d < 0) || expected as usize != values.len() {
        return Err(format!(
            "output {name:?}: shape {:?} does not hold the {} values sent",
            tensor.shape,
            values.len()
        ));
    }
    if tensor.shape.first().copied() != Some(rows as i64) || rows == 0 {
        return Err(format!("output {name:?} has shape {:?} for {rows} row(s)", tensor.shape));
    }
    let columns = values.len() / rows;
    Ok(Output { values, columns, datatype: tensor.datatype, shape: tensor.shape })
}

/// The Open Inference Protocol's numeric datatypes: what JSON `data` may carry as numbers.
const NUMERIC: [&str; 12] =
    ["FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64", "BOOL"];

/// Raw little-endian values of a numeric datatype as float32.
fn from_bytes(datatype: &str, bytes: &[u8]) -> Result<Vec<f32>, String> {
    fn each<const N: usize>(bytes: &[u8], convert: impl Fn([u8; N]) -> f32) -> Result<Vec<f32>, String> {
        if !bytes.len().is_multiple_of(N) {
            return Err(format!("{} bytes are not a whole number of {N}-byte values", bytes.len()));
        }
        Ok(bytes.chunks_exact(N).map(|c| convert(c.try_into().expect("chunk of N bytes"))).collect())
    }
    match datatype {
        "FP32" => each(bytes, f32::from_le_bytes),
        "FP64" => each(bytes, |b| f64::from_le_bytes(b) as f32),
        "FP16" => each(bytes, |b| half::f16::from_le_bytes(b).to_f32()),
        "INT64" => each(bytes, |b| i64::from_le_bytes(b) as f32),
        "INT32" => each(bytes, |b| i32::from_le_bytes(b) as f32),
        "UINT8" | "BOOL" => each(bytes, |b: [u8; 1]| f32::from(b[0])),
        other => Err(format!("datatype {other:?} is not a number quorum reads")),
    }
}

/// JSON `data`, flat or nested row by row, as float32 (booleans as 0 and 1).
fn flatten(value: &serde_json::Value, out: &mut Vec<f32>) -> Result<(), String> {
    match value {
        serde_json::Value::Array(items) => items.iter().try_for_each(|v| flatten(v, out)),
        serde_json::Value::Number(n) => {
            out.push(n.as_f64().ok_or_else(|| format!("{n} is not a number quorum reads"))? as f32);
            Ok(())
        }
        serde_json::Value::Bool(b) => {
            out.push(f32::from(u8::from(*b)));
            Ok(())
        }
        other => Err(format!("{} is not a number", truncate_json(other))),
    }
}

fn truncate_json(value: &serde_json::Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(40) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_request_carries_the_rows_and_asks_for_the_output() {
        let layout = Layout::Single { name: "X".into() };
        let request = Request { layout: &layout, datatype: "FP32", output: "probabilities", binary: false };
        let (mut head, mut tail) = (String::new(), Vec::new());
        request.encode(&[1.0, 2.5, -3.0, 0.1], 2, 2, &mut head, &mut tail);
        let parsed: serde_json::Value = serde_json::from_str(&head).unwrap();
        assert_eq!(parsed["inputs"][0]["shape"], serde_json::json!([2, 2]));
        assert_eq!(parsed["inputs"][0]["data"], serde_json::json!([1.0, 2.5, -3.0, 0.1]));
        assert_eq!(parsed["outputs"][0]["name"], "probabilities");
        assert!(tail.is_empty());
    }

    #[test]
    fn a_binary_request_per_feature_sends_each_column() {
        let layout = Layout::PerFeature { names: vec!["a".into(), "b".into()], rank: 2 };
        let request = Request { layout: &layout, datatype: "FP64", output: "prediction", binary: true };
        let (mut head, mut tail) = (String::new(), Vec::new());
        request.encode(&[1.0, 2.0, 3.0, 4.0], 2, 2, &mut head, &mut tail);
        let parsed: serde_json::Value = serde_json::from_str(&head).unwrap();
        assert_eq!(parsed["inputs"][1]["name"], "b");
        assert_eq!(parsed["inputs"][1]["shape"], serde_json::json!([2, 1]));
        assert_eq!(parsed["inputs"][1]["parameters"]["binary_data_size"], 16);
        let column_b: Vec<f64> = tail[16..].chunks(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect();
        assert_eq!(column_b, [2.0, 4.0]);
    }

    #[test]
    fn answers_decode_from_json_nested_json_and_binary_of_any_numeric_type() {
        let json = br#"{"outputs":[{"name":"label","datatype":"INT64","shape":[2],"data":[0,1]},
            {"name":"p","datatype":"FP64","shape":[2,2],"data":[[0.25,0.75],[0.5,0.5]]}]}"#;
        let out = decode(json, None, "p", 2).unwrap();
        assert_eq!((out.values.as_slice(), out.columns), ([0.25f32, 0.75, 0.5, 0.5].as_slice(), 2));
        let header =
            br#"{"outputs":[{"name":"p","datatype":"FP32","shape":[1,1],"parameters":{"binary_data_size":4}}]}"#;
        let mut body = header.to_vec();
        body.extend_from_slice(&0.5f32.to_le_bytes());
        let out = decode(&body, Some(header.len()), "p", 1).unwrap();
        assert_eq!(out.values, [0.5]);
    }

    #[test]
    fn garbage_answers_are_errors_naming_what_is_wrong() {
        let cases: [(&[u8], &str); 5] = [
            (b"<html>oops</html>", "not an inference response"),
            (br#"{"outputs":[]}"#, "no output"),
            (br#"{"outputs":[{"name":"p","datatype":"FP32","shape":[3],"data":[1,2]}]}"#, "does not hold"),
            (br#"{"outputs":[{"name":"p","datatype":"FP32","shape":[1],"data":[1]}]}"#, "for 2 row(s)"),
            (br#"{"outputs":[{"name":"p","datatype":"BYTES","shape":[2],"data":["a","b"]}]}"#, "is not a number"),
        ];
        for (body, expected) in cases {
            let e = decode(body, None, "p", 2).unwrap_err();
            assert!(e.contains(expected), "{e} (wanted {expected:?})");
        }
        assert!(decode(b"{}", Some(99), "p", 1).unwrap_err().contains("past the body"));
    }
}
