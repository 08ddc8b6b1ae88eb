// The public types of quorum-engine. The classes and objects are generated from the Rust code into
// native.d.ts (checked in `make test`); this file adds what index.js adds.

export * from './native'
export * from './results'

/** The stable code of every error quorum-engine throws, by name. */
export declare const ErrorCode: Readonly<{
  RUNTIME_UNAVAILABLE: 'runtime_unavailable'
  INVALID_NAME: 'invalid_name'
  INVALID_INPUT: 'invalid_input'
  MISSING_FEATURE: 'missing_feature'
  NON_FINITE: 'non_finite'
  NOT_FOUND: 'not_found'
  ALREADY_EXISTS: 'already_exists'
  CONFIG: 'config'
  CHECKSUM_MISMATCH: 'checksum_mismatch'
  MODEL_LOAD: 'model_load'
  OUTPUT_SHAPE: 'output_shape'
  INFERENCE: 'inference'
  MEMBER_UNAVAILABLE: 'member_unavailable'
  QUORUM_NOT_REACHED: 'quorum_not_reached'
  DEADLINE_EXCEEDED: 'deadline_exceeded'
  OPTIMIZE: 'optimize'
  TRACKING_DISABLED: 'tracking_disabled'
  OUTCOME: 'outcome'
  IO: 'io'
  JSON: 'json'
  INTERNAL: 'internal'
  LOCKED: 'locked'
  IN_USE: 'in_use'
  TOO_LARGE: 'too_large'
  STATE_LOST: 'state_lost'
  OVERLOADED: 'overloaded'
}>

/** One of the values of `ErrorCode`. */
export type ErrorCodeValue = (typeof ErrorCode)[keyof typeof ErrorCode]

/** Every error thrown (or rejected) by quorum-engine carries a stable `code`, the same as the CLI's
 * and the Python package's. */
export interface QuorumError extends Error {
  code: ErrorCodeValue
}

/** quorum's version: the npm package's, the Python wheel's and the Rust crate's. */
export declare const version: string

/** The ONNX Runtime library inside the installed onnxruntime-node package, if any. */
export declare function onnxruntimeLibrary(): string | undefined
