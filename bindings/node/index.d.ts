// The public types of quorum-engine. The classes and objects are generated from the Rust code into
// native.d.ts (checked in `make test`); this file adds what index.js adds.

export * from './native'

/** Every error thrown (or rejected) by quorum-engine carries a stable `code`, the same as the CLI's
 * and the Python package's: missing_feature, non_finite, invalid_input, not_found, config, ... */
export interface QuorumError extends Error {
  code: string
}

/** The ONNX Runtime library inside the installed onnxruntime-node package, if any. */
export declare function onnxruntimeLibrary(): string | undefined
