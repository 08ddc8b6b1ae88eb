'use strict'
const test = require('node:test')
const assert = require('node:assert/strict')
const path = require('node:path')
const quorum = require('quorum-engine')
const { MODELS, holdoutRows, marketEngine, featuresOf } = require('./helpers')

const rows = holdoutRows()

test('every bad input throws an Error with a stable code, never crashes', async () => {
  const { engine } = marketEngine(quorum)
  const good = featuresOf(engine, rows[0])
  const cases = [
    [() => engine.predict('market', { ret_1d: 0.1 }), 'missing_feature'],
    [() => engine.predict('nope', good), 'not_found'],
    [() => engine.predict('market', { ...good, vix: NaN }), 'non_finite'],
    [() => engine.predict('market', { ...good, vix: Infinity }), 'non_finite'],
    [() => engine.predictBatch('market', new Float32Array(5)), 'invalid_input'],
    [() => engine.predictBatch('market', new Float32Array(0)), 'invalid_input'],
    [() => engine.recordOutcome(123456, 1), 'outcome'],
    [() => engine.recordOutcome(-1, 1), 'outcome'],
    [() => engine.registerModel('../x', path.join(MODELS, 'sentiment.onnx'), ['a']), 'invalid_name'],
    [() => engine.registerModel('x', path.join(MODELS, 'missing.onnx'), ['a']), 'io'],
    [() => engine.registerModel('x', path.join(MODELS, 'sentiment.onnx'), ['a', 'b']), 'model_load'],
    [() => engine.createEnsemble({ name: 'e', members: ['technical'], weights: [1, 2] }), 'config'],
    [() => engine.createEnsemble({ name: 'e', members: ['technical'], strategy: 'vibes' }), 'json'],
  ]
  for (const [call, code] of cases) {
    assert.throws(call, (error) => error instanceof Error && error.code === code && !error.message.startsWith('['))
  }
  await assert.rejects(engine.predictAsync('market', { ret_1d: 0.1 }), (e) => e.code === 'missing_feature')
  await assert.rejects(engine.predictBatchAsync('nope', new Float32Array(21)), (e) => e.code === 'not_found')
  // Wrong argument types are TypeErrors from the binding layer, not crashes.
  assert.throws(() => engine.predict('market', 'not an object'))
  assert.throws(() => engine.predictBatch('market', [1, 2, 3]))
})

test('the ONNX Runtime comes from onnxruntime-node', () => {
  const lib = quorum.onnxruntimeLibrary()
  assert.ok(lib && lib.includes('onnxruntime-node'), lib)
})
