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
