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

const CODES = new Set(native.errorCodes())

function withCode(error) {
  if (!(error instanceof Error)) return error
  const match = CODED.exec(error.message)
  if (match) {
    error.code = match[1]
    error.message = match[2]
  } else if (!CODES.has(error.code)) {
    // N-API's own argument checks (a missing argument, a string for a number) carry its status
    // ('InvalidArg', 'NumberExpected') or nothing: they are the caller's invalid input.
    error.code = 'invalid_input'
    error.message = error.message.replace(/^Expected \$?\w+, got \d+$/, 'an argument has the wrong type')
  }
  return error
}

/** A coded TypeError for a JS-side argument check. */
function invalidInput(message) {
  const error = new TypeError(message)
  error.code = 'invalid_input'
  return error
}

/** A row for the native path: a Float32Array as is; any other typed array or an array of numbers
 * copied into one; anything else (booleans, strings, holes) refused, as the Python package does. */
function float32Row(row) {
  if (row instanceof Float32Array) return row
  if (ArrayBuffer.isView(row) && !(row instanceof DataView) && typeof row[0] !== 'bigint') return Float32Array.from(row)
  if (Array.isArray(row)) {
    for (let i = 0; i < row.length; i++) {
      if (typeof row[i] !== 'number') throw invalidInput(`row[${i}]: a ${typeof row[i]} is not a number`)
    }
    return Float32Array.from(row)
  }
  throw invalidInput(`a row is a Float32Array or an array of numbers, not ${row === null ? 'null' : typeof row}`)
}

/** The features argument of predict: an object of numbers. */
function checkFeatures(features) {
  if (features === null || typeof features !== 'object' || Array.isArray(features)) {
    throw invalidInput(`features are an object of {name: number}, not ${features === null ? 'null' : Array.isArray(features) ? 'an array' : typeof features}`)
  }
}

// Every method of the native classes, synchronous or returning a Promise, reports coded errors.
function reportCodes(proto) {
  for (const name of Object.getOwnPropertyNames(proto)) {
    const descriptor = Object.getOwnPropertyDescriptor(proto, name)
    const original = descriptor.value
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
}
reportCodes(native.Registry.prototype)
reportCodes(native.Optimizer.prototype)
const proto = native.InferenceEngine.prototype
const nativePredict = proto.predict
const nativePredictRow = proto.predictRow
const nativePredictAsync = proto.predictAsync
const nativeSchema = proto.schema
const nativePredictRowForSchema = proto.predictRowForSchema
const nativePredictRowAsyncForSchema = proto.predictRowAsyncForSchema
reportCodes(proto)

// Predictions cross N-API packed — numbers in a Float64Array, strings joined in one string; see
// PackedPrediction and into_scratch in src/lib.rs — and become the public `Prediction` here: an object
// literal built by JavaScript costs far less than N-API's property-by-property construction, and the
// synchronous calls write their numbers into one reused buffer (`make bench-node` measures it).
let scratch = new Float64Array(8 + 5 * 16)

function unpack(packed) {
  return build(packed.numbers, packed.strings)
}

function unpackScratch(result) {
  if (typeof result === 'string') return build(scratch, result.split('\0'))
  // Too many members for the buffer: it came back whole; the next call gets a buffer that fits.
  scratch = new Float64Array(result.numbers.length)
  return unpack(result)
}

function build(n, s) {
  const modelContributions = {}
  const skipped = []
  for (let k = 8, j = 5; j < s.length; k += 5, j += 4) {
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
      class: s[j + 3] || undefined,
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
    experiment: s[3] ? { name: s[3], arm: s[4] } : undefined,
  }
}

// The prediction calls, the hot path, get wrappers of their own instead of the generic one above.
// Each engine's ensembles' feature names (and an id of that order) so that `predict` can fill a row
// from the request object in JavaScript; a stale id (the ensemble's features changed) refreshes them.
const schemas = new WeakMap()

function schemaOf(engine, ensemble, refresh) {
  let byName = schemas.get(engine)
  if (byName === undefined) {
    byName = new Map()
    schemas.set(engine, byName)
  }
  let entry = byName.get(ensemble)
  if (entry === undefined || refresh) {
    const schema = nativeSchema.call(engine, ensemble)
    entry = { names: schema.names, id: schema.id, row: new Float32Array(schema.names.length) }
    byName.set(ensemble, entry)
  }
  return entry
}

/** Fills the entry's row from `features` by name; false when one is missing or not a number. */
function fillRow({ names, row }, features) {
  for (let i = 0; i < names.length; i++) {
    const value = features[names[i]]
    if (typeof value !== 'number') return false
    row[i] = value
  }
  return true
}

proto.predict = function predict(ensemble, features, deadlineMs, routingKey) {
  try {
    if (typeof ensemble === 'string' && features !== null && typeof features === 'object') {
      const entry = schemaOf(this, ensemble, false)
      if (fillRow(entry, features)) {
        const result = nativePredictRowForSchema.call(this, ensemble, entry.row, entry.id, scratch, deadlineMs, routingKey)
        if (result !== '') return unpackScratch(result)
        schemaOf(this, ensemble, true)
      }
    }
    // A missing or non-numeric feature (the native path names it in a typed error), or features that
    // just changed: read by name natively.
    checkFeatures(features)
    return unpackScratch(nativePredict.call(this, ensemble, features, scratch, deadlineMs, routingKey))
  } catch (error) {
    throw withCode(error)
  }
}
proto.predictRow = function predictRow(ensemble, row, deadlineMs, routingKey) {
  try {
    return unpackScratch(nativePredictRow.call(this, ensemble, float32Row(row), scratch, deadlineMs, routingKey))
  } catch (error) {
    throw withCode(error)
  }
}
/** A native asynchronous answer as a Promise: already settled when it came at once. */
function settled(pending) {
  if (typeof pending === 'string') return Promise.resolve(unpackScratch(pending))
  if (typeof pending.then !== 'function') return Promise.resolve(unpack(pending))
  return pending.then(unpack, (error) => {
    throw withCode(error)
  })
}

proto.predictAsync = function predictAsync(ensemble, features, routingKey) {
  // The features are read synchronously: a bad request still rejects rather than throws. As in
  // `predict`, the row is filled here when every feature is a number.
  try {
    checkFeatures(features)
    if (typeof ensemble === 'string') {
      const entry = schemaOf(this, ensemble, false)
      if (fillRow(entry, features)) {
        const pending = nativePredictRowAsyncForSchema.call(this, ensemble, entry.row, entry.id, scratch, routingKey)
        if (pending !== '') return settled(pending)
        schemaOf(this, ensemble, true)
      }
    }
    return settled(nativePredictAsync.call(this, ensemble, features, routingKey))
  } catch (error) {
    return Promise.reject(withCode(error))
  }
}

/** Runs `construct` (a native constructor call), reporting its error with its code. */
function coded(construct) {
  try {
    return construct()
  } catch (error) {
    throw withCode(error)
  }
}

/** `options` with the ONNX Runtime of onnxruntime-node unless another is named. */
function withRuntime(options) {
  return { ...options, ortLibrary: options.ortLibrary ?? onnxruntimeLibrary() }
}

/** A home argument: a non-empty string (never `undefined` turned into a folder named "undefined"). */
function homeOf(home) {
  if (typeof home !== 'string' || home === '') {
    throw invalidInput(`the quorum home is a non-empty path string, not ${home === '' ? 'an empty string' : home === null ? 'null' : typeof home}`)
  }
  return home
}

class InferenceEngine extends native.InferenceEngine {
  constructor(home, options = {}) {
    coded(() => super(homeOf(home), withRuntime(options)))
  }
}

class Registry extends native.Registry {
  constructor(home, options = {}) {
    coded(() => super(homeOf(home), withRuntime(options)))
  }
}

class Optimizer extends native.Optimizer {
  constructor(engine) {
    coded(() => super(engine))
  }
}

/** The stable code of every error quorum-engine throws, by name (the same strings as the Python
 * package's and the CLI's). A test checks that it lists exactly the core's codes. */
const ErrorCode = Object.freeze({
  RUNTIME_UNAVAILABLE: 'runtime_unavailable',
  INVALID_NAME: 'invalid_name',
  INVALID_INPUT: 'invalid_input',
  MISSING_FEATURE: 'missing_feature',
  NON_FINITE: 'non_finite',
  NOT_FOUND: 'not_found',
  ALREADY_EXISTS: 'already_exists',
  CONFIG: 'config',
  CHECKSUM_MISMATCH: 'checksum_mismatch',
  MODEL_LOAD: 'model_load',
  OUTPUT_SHAPE: 'output_shape',
  INFERENCE: 'inference',
  MEMBER_UNAVAILABLE: 'member_unavailable',
  QUORUM_NOT_REACHED: 'quorum_not_reached',
  DEADLINE_EXCEEDED: 'deadline_exceeded',
  OPTIMIZE: 'optimize',
  TRACKING_DISABLED: 'tracking_disabled',
  OUTCOME: 'outcome',
  IO: 'io',
  JSON: 'json',
  INTERNAL: 'internal',
  LOCKED: 'locked',
  IN_USE: 'in_use',
  TOO_LARGE: 'too_large',
  STATE_LOST: 'state_lost',
  OVERLOADED: 'overloaded',
})

module.exports = {
  InferenceEngine,
  Registry,
  Optimizer,
  ErrorCode,
  errorCodes: native.errorCodes,
  version: native.version(),
  onnxruntimeLibrary,
}
