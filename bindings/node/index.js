'use strict'
// quorum-engine: loads the native addon, points it at the ONNX Runtime bundled in onnxruntime-node,
// and moves each error's stable code from its message into `error.code`.

const fs = require('node:fs')
const path = require('node:path')

function loadNative() {
  const prefix = `quorum.${process.platform}-${process.arch}`
  const file = fs.readdirSync(__dirname).find((f) => f.startsWith(prefix) && f.endsWith('.node'))
  if (!file) {
    throw new Error(`quorum-engine has no native build for ${process.platform}-${process.arch} in ${__dirname}`)
  }
  return require(path.join(__dirname, file))
}

const native = loadNative()

/** The ONNX Runtime library inside the installed onnxruntime-node package, if any. */
function onnxruntimeLibrary() {
  if (process.env.ORT_DYLIB_PATH) return process.env.ORT_DYLIB_PATH
  let root
  try {
    root = path.dirname(require.resolve('onnxruntime-node/package.json'))
  } catch {
    return undefined
  }
  const bin = path.join(root, 'bin')
  const apis = fs.existsSync(bin) ? fs.readdirSync(bin).sort().reverse() : []
  for (const api of apis) {
    const dir = path.join(bin, api, process.platform, process.arch)
    if (!fs.existsSync(dir)) continue
    const lib = fs.readdirSync(dir).find((f) => /^libonnxruntime\.so\.\d+$/.test(f) || /^libonnxruntime\.\d+\.dylib$/.test(f) || f === 'onnxruntime.dll')
    if (lib) return path.join(dir, lib)
  }
  return undefined
}

const CODED = /^\[([a-z_]+)\] ([\s\S]*)$/

function withCode(error) {
  const match = error instanceof Error ? CODED.exec(error.message) : null
  if (match) {
    error.code = match[1]
    error.message = match[2]
  }
  return error
}

// Every method of the native class, synchronous or returning a Promise, reports coded errors.
const proto = native.InferenceEngine.prototype
const nativePredict = proto.predict
const nativePredictRow = proto.predictRow
const nativePredictAsync = proto.predictAsync
for (const name of Object.getOwnPropertyNames(proto)) {
  const original = proto[name]
  if (name === 'constructor' || typeof original !== 'function') continue
  proto[name] = function (...args) {
    let result
    try {
      result = original.apply(this, args)
    } catch (error) {
      throw withCode(error)
    }
    if (result && typeof result.then === 'function') {
      return result.catch((error) => {
        throw withCode(error)
      })
    }
    return result
  }
}

// Predictions cross N-API packed — numbers in one Float64Array, strings in one array; see
// PackedPrediction in src/lib.rs — and become the public `Prediction` here: an object literal built
// by JavaScript costs far less than N-API's property-by-property construction (`make bench-node`).
function unpack(packed) {
  const n = packed.numbers
  const s = packed.strings
  const modelContributions = {}
  const skipped = []
  for (let k = 8, j = 3; j < s.length; k += 5, j += 3) {
    const prediction = n[k + 1]
    const recentLoss = n[k + 4]
    const answered = !Number.isNaN(prediction)
    modelContributions[s[j]] = {
      version: n[k],
      prediction: answered ? prediction : undefined,
      weight: n[k + 2],
      latencyMs: n[k + 3],
      recentLoss: Number.isNaN(recentLoss) ? undefined : recentLoss,
      error: s[j + 1] || undefined,
      fallback: s[j + 2] || undefined,
    }
    if (!answered) skipped.push(s[j])
  }
  const flags = n[6]
  return {
    requestId: n[0],
    ensemble: s[0],
    ensembleVersion: n[1],
    strategy: s[1],
    prediction: n[2],
    confidence: n[3],
    label: Number.isNaN(n[4]) ? undefined : n[4],
    modelContributions,
    regime: s[2] || undefined,
    weightsEpoch: n[5],
    degraded: (flags & 1) !== 0,
    cached: (flags & 2) !== 0,
    stale: (flags & 4) !== 0,
    fused: (flags & 8) !== 0,
    skipped,
    latencyMs: n[7],
  }
}

// The prediction calls, the hot path, get wrappers of their own instead of the generic one above.
proto.predict = function predict(ensemble, features, deadlineMs) {
  try {
    return unpack(nativePredict.call(this, ensemble, features, deadlineMs))
  } catch (error) {
    throw withCode(error)
  }
}
proto.predictRow = function predictRow(ensemble, row, deadlineMs) {
  try {
    return unpack(nativePredictRow.call(this, ensemble, row, deadlineMs))
  } catch (error) {
    throw withCode(error)
  }
}
proto.predictAsync = function predictAsync(ensemble, features) {
  // The features are read synchronously: a bad request still rejects rather than throws.
  let pending
  try {
    pending = nativePredictAsync.call(this, ensemble, features)
  } catch (error) {
    return Promise.reject(withCode(error))
  }
  return pending.then(unpack, (error) => {
    throw withCode(error)
  })
}

class InferenceEngine extends native.InferenceEngine {
  constructor(home, options = {}) {
    const ortLibrary = options.ortLibrary ?? onnxruntimeLibrary()
    try {
      super(String(home), { ...options, ortLibrary })
    } catch (error) {
      throw withCode(error)
    }
  }
}

module.exports = { InferenceEngine, onnxruntimeLibrary }
