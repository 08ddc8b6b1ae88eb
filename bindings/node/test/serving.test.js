'use strict'
const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const quorum = require('quorum-engine')
const { MODELS, manifest, holdoutRows, marketEngine, featuresOf } = require('./helpers')

const rows = holdoutRows()

function engineWith(options) {
  const home = fs.mkdtempSync(path.join(os.tmpdir(), 'quorum-node-serving-'))
  const engine = new quorum.InferenceEngine(home, { persistence: false, ...options })
  for (const m of manifest()) {
    engine.registerModel(m.name, path.join(MODELS, `${m.name}.onnx`), m.features, { kind: m.kind })
  }
  engine.createEnsemble({ name: 'market', members: ['technical', 'fundamental', 'sentiment'] })
  return engine
}

test('per-model options: batching, replicas, lazy loading, unloading', () => {
  const engine = engineWith({
    defaultModel: { replicas: [1, 2], batching: { maxBatch: 32 } },
    models: { sentiment: { load: 'lazy', replicas: [0, 1], timeoutMs: 1000 } },
    memoryBudgetBytes: 100e6,
  })
  const names = engine.featureNames('market')
  const row = new Float32Array(names.map((n) => rows[0][n]))
  const first = engine.predictRow('market', row)
  assert.equal(first.degraded, false)
  const status = Object.fromEntries(engine.replicas().map((s) => [s.model, s]))
  assert.deepEqual(Object.keys(status).sort(), ['fundamental', 'sentiment', 'technical'])
  assert.equal(status.technical.max, 2)
  assert.ok(engine.unloadModel('sentiment') <= 1)
  assert.equal(engine.predictRow('market', row).prediction, first.prediction)
})

test('bad model options are coded errors', () => {
  for (const options of [{ replicas: [3, 1] }, { replica: [1, 2] }, { timeoutMs: -1 }]) {
    assert.throws(
      () => new quorum.InferenceEngine(fs.mkdtempSync(path.join(os.tmpdir(), 'q-')), { defaultModel: options }),
      (e) => ['config', 'json'].includes(e.code),
    )
  }
})

test('a deadline that cannot be met is refused with deadline_exceeded', () => {
  const { engine } = marketEngine(quorum)
  const f = featuresOf(engine, rows[0])
  assert.ok(engine.predict('market', f, 5000).prediction > 0)
  assert.throws(() => engine.predict('market', f, 0), (e) => e.code === 'deadline_exceeded')
  assert.throws(() => engine.predict('market', f, -1), (e) => e.code === 'invalid_input')
})

test('setDefaultVersion hot-swaps the loaded ensemble', () => {
  const { engine } = marketEngine(quorum)
  const technical = manifest().find((m) => m.name === 'technical')
  engine.registerModel('technical', path.join(MODELS, 'technical.onnx'), technical.features)
  const f = featuresOf(engine, rows[0])
  assert.equal(engine.predict('market', f).modelContributions.technical.version, 1)
  assert.deepEqual(engine.setDefaultVersion('technical', 2), ['market'])
  assert.equal(engine.predict('market', f).modelContributions.technical.version, 2)
  assert.equal(engine.predict('market', f).stale, false)
})

test('optimize and benchmark a registered model', () => {
  const { engine } = marketEngine(quorum)
  const data = path.join(require('./helpers').REPO, 'examples', 'data', 'holdout.csv')
  const report = engine.optimize('technical', data, 'next_day_up', { accuracyThreshold: 0.01, methods: ['int8-dynamic'] })
  assert.deepEqual(report.candidates.map((c) => c.method), ['int8-dynamic'])
  for (const key of ['chosen', 'performance_improvement', 'deployment_ready']) assert.ok(key in report, key)
  const bench = engine.benchmark('technical', data, 'next_day_up')
  assert.deepEqual(bench.latency.map((l) => l.batch), [1, 8, 64, 512])
  assert.throws(() => engine.optimize('technical', data, 'next_day_up', { methods: ['int4'] }), (e) => e.code === 'config')
})

test('the example models run natively and fusion says why it has nothing to fuse', () => {
  const fused = engineWith({})
  const separate = engineWith({ fusion: false })
  const native = fused.fusion('market')
  assert.equal(native.fused, false)
  assert.match(native.reason, /native/)
  assert.deepEqual(native.native, ['technical', 'fundamental', 'sentiment'])
  for (const r of fused.replicas()) assert.equal(r.executor.kind, 'native')
  const status = separate.fusion('market')
  assert.equal(status.fused, false)
  assert.match(status.reason, /with_fusion/)
  for (const row of rows.slice(0, 50)) {
    const a = fused.predict('market', featuresOf(fused, row))
    const b = separate.predict('market', featuresOf(separate, row))
    assert.equal(a.fused, false)
    assert.equal(b.fused, false)
    assert.equal(a.prediction, b.prediction)
    assert.equal(a.confidence, b.confidence)
  }
  assert.throws(() => fused.fusion('nope'), (e) => e.code === 'not_found')
})

test('predict follows an ensemble whose features change, and names what is missing', () => {
  const engine = engineWith({})
  const full = featuresOf(engine, rows[0])
  const before = engine.predict('market', full)
  assert.equal(Object.keys(before.modelContributions).length, 3)
  // A new version with other members: other features, in another order.
  engine.createEnsemble({ name: 'market', members: ['sentiment', 'technical'] })
  const names = engine.featureNames('market')
  const after = engine.predict('market', full)
  assert.deepEqual(Object.keys(after.modelContributions), ['sentiment', 'technical'])
  const row = new Float32Array(names.map((n) => full[n]))
  assert.equal(after.prediction, engine.predictRow('market', row).prediction)
  const { vix, ...withoutVix } = full
  assert.throws(() => engine.predict('market', withoutVix), (e) => e.code === 'missing_feature' && /vix/.test(e.message))
  assert.throws(() => engine.predict('market', { ...full, vix: 'high' }), (e) => e.code === 'invalid_input')
  assert.equal(engine.predict('market', { ...full, vix: Number(vix) }).prediction, after.prediction)
})
