'use strict'
// Models as exporters write them, through the Node binding: a DataFrame export with one input per
// column and a ZipMap, a graph whose inputs need a map, a batch fixed to one row, a string input.
const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const quorum = require('quorum-engine')
const { REPO, holdoutRows } = require('./helpers')

const EXPORTERS = path.join(REPO, 'tests', 'fixtures', 'exporters')
const FEATURES = ['ret_1d', 'ret_5d', 'vix']

function fresh() {
  return new quorum.InferenceEngine(fs.mkdtempSync(path.join(os.tmpdir(), 'quorum-node-exporters-')), { persistence: false })
}

function matrix(n) {
  return Float32Array.from(holdoutRows().slice(0, n).flatMap((r) => FEATURES.map((f) => r[f])))
}

// A batch's member predictions equal the same rows predicted one by one.
function batchMatchesRows(engine, ensemble, n) {
  const x = matrix(n)
  const batch = engine.predictBatch(ensemble, x, FEATURES)
  for (let i = 0; i < n; i++) {
    const one = engine.predictRow(ensemble, x.subarray(i * 3, i * 3 + 3))
    assert.ok(Math.abs(one.prediction - batch.memberPredictions[i]) < 1e-6, `row ${i}`)
  }
}

test('a DataFrame export registers by its input names and reports its class', () => {
  const engine = fresh()
  const meta = engine.registerModel('frame_pipeline', path.join(EXPORTERS, 'frame_pipeline.onnx'), FEATURES)
  assert.equal(meta.metadata.inputs, 'ret_1d=ret_1d;ret_5d=ret_5d;vix=vix')
  engine.createEnsemble({ name: 'frame', members: ['frame_pipeline'] })
  const one = engine.predictRow('frame', matrix(1))
  assert.equal(one.modelContributions.frame_pipeline.class, '1')
  batchMatchesRows(engine, 'frame', 20)
})

test('grouped inputs take a map, and a wrong one is a model_load error', () => {
  const engine = fresh()
  const file = path.join(EXPORTERS, 'grouped_inputs.onnx')
  assert.throws(() => engine.registerModel('grouped', file, FEATURES), (e) => e.code === 'model_load' && /--inputs/.test(e.message))
  assert.throws(
    () => engine.registerModel('grouped', file, FEATURES, { inputs: 'x1=vix;x2=ret_1d' }),
    (e) => e.code === 'model_load' && /takes 2 columns/.test(e.message),
  )
  assert.throws(() => engine.registerModel('grouped', file, FEATURES, { inputs: 'x1' }), (e) => e.code === 'config')
  engine.registerModel('grouped', file, FEATURES, { inputs: 'x1=ret_1d,ret_5d;x2=vix' })
  engine.createEnsemble({ name: 'g', members: ['grouped'] })
  batchMatchesRows(engine, 'g', 20)
})

test('a batch fixed to one row takes any batch', () => {
  const engine = fresh()
  assert.equal(engine.registerModel('fixed', path.join(EXPORTERS, 'fixed_batch1.onnx'), FEATURES).max_batch, 1)
  engine.createEnsemble({ name: 'f', members: ['fixed'] })
  batchMatchesRows(engine, 'f', 17)
})

test('a string input is refused with what to change', () => {
  const engine = fresh()
  assert.throws(
    () => engine.registerModel('s', path.join(EXPORTERS, 'string_input.onnx'), ['ret_1d', 'sector']),
    (e) => e.code === 'model_load' && /takes strings.*encode/.test(e.message),
  )
})

test('models at three opsets fuse and say so', () => {
  const { MODELS, manifest } = require('./helpers')
  const engine = new quorum.InferenceEngine(fs.mkdtempSync(path.join(os.tmpdir(), 'quorum-node-mixed-')), { persistence: false, native: false })
  for (const m of manifest()) engine.registerModel(m.name, path.join(MODELS, 'mixed', `${m.name}.onnx`), m.features, { kind: m.kind })
  engine.createEnsemble({ name: 'market', members: ['technical', 'fundamental', 'sentiment'] })
  const status = engine.fusion('market')
  assert.equal(status.fused, true, JSON.stringify(status))
  assert.deepEqual(status.members, ['technical', 'fundamental', 'sentiment'])
  assert.deepEqual(status.opsets, { 'ai.onnx': 22, 'ai.onnx.ml': 1 })
})
