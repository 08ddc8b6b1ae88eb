'use strict'
// Registry, Optimizer and InferenceEngine as three classes over one home, in one process.
const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const quorum = require('quorum-engine')
const { REPO, MODELS, manifest, marketEngine } = require('./helpers')

test('a standalone registry and an engine share one home', () => {
  const home = fs.mkdtempSync(path.join(os.tmpdir(), 'quorum-node-registry-'))
  const registry = new quorum.Registry(home)
  const m = manifest()[2]
  assert.equal(registry.register(m.name, path.join(MODELS, `${m.name}.onnx`), m.features).version, 1)
  const engine = new quorum.InferenceEngine(home, { persistence: false })
  assert.deepEqual(engine.registry.list().map((s) => s.name), [m.name])
  engine.registerModel(m.name, path.join(MODELS, `${m.name}.onnx`), m.features)
  assert.deepEqual(registry.versions(m.name), [1, 2])
  assert.equal(registry.verify(`${m.name}@2`).sha256, registry.show(`${m.name}@2`).sha256)
  assert.throws(() => registry.show('nope'), (e) => e.code === quorum.ErrorCode.NOT_FOUND)
})

test('set-default through the engine registry hot-swaps its loaded ensembles', () => {
  const { engine } = marketEngine(quorum)
  const t = manifest()[0]
  engine.registry.register(t.name, path.join(MODELS, `${t.name}.onnx`), t.features)
  assert.deepEqual(engine.registry.setDefault(t.name, 2), ['market'])
  const row = new Float32Array(engine.featureNames('market').length)
  assert.equal(engine.predictRow('market', row).modelContributions[t.name].version, 2)
})

test('the optimizer quantizes one file and benchmarks a registered model', () => {
  const { engine } = marketEngine(quorum)
  const optimizer = new quorum.Optimizer(engine)
  const out = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'quorum-node-q-')), 'technical-int8.onnx')
  const report = optimizer.quantize(path.join(MODELS, 'technical.onnx'), out, 'int8-dynamic')
  assert.equal(fs.statSync(out).size, report.bytes)
  assert.ok(report.nodes.some((n) => n.rewritten))
  assert.throws(() => optimizer.quantize(path.join(MODELS, 'technical.onnx'), out, 'int4'), (e) => e.code === 'config')
  const holdout = path.join(REPO, 'examples', 'data', 'holdout.csv')
  assert.throws(() => optimizer.optimize('sentiment', holdout, 'next_day_up', { batchSizes: { 3: 1 } }), (e) => e.code === 'config')
  const bench = engine.optimizer.benchmark('sentiment', path.join(REPO, 'examples', 'data', 'holdout.csv'), 'next_day_up')
  assert.equal(bench.latency.length, 4)
})

test('ErrorCode names exactly the core codes, and the type declarations list each', () => {
  const codes = quorum.errorCodes()
  assert.deepEqual([...Object.values(quorum.ErrorCode)].sort(), [...codes].sort())
  const dts = fs.readFileSync(require.resolve('quorum-engine/index.d.ts'), 'utf8')
  for (const code of codes) assert.ok(dts.includes(`'${code}'`), code)
})

test('tracking disabled is one code for outcomes and metrics', () => {
  const home = fs.mkdtempSync(path.join(os.tmpdir(), 'quorum-node-untracked-'))
  const engine = new quorum.InferenceEngine(home, { tracking: false, persistence: false })
  assert.throws(() => engine.recordOutcome(1, 1), (e) => e.code === 'tracking_disabled')
  assert.throws(() => engine.metrics('market'), (e) => e.code === 'tracking_disabled')
})
