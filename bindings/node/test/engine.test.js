'use strict'
const test = require('node:test')
const assert = require('node:assert/strict')
const quorum = require('quorum-engine')
const { holdoutRows, marketEngine, featuresOf } = require('./helpers')

const rows = holdoutRows()

test('predict returns the story fields', () => {
  const { engine } = marketEngine(quorum)
  const p = engine.predict('market', featuresOf(engine, rows[0]))
  assert.ok(p.prediction >= 0 && p.prediction <= 1 && p.confidence >= 0 && p.confidence <= 1)
  assert.equal(p.label, p.prediction >= 0.5 ? 1 : 0)
  assert.deepEqual(Object.keys(p.modelContributions).sort(), ['fundamental', 'sentiment', 'technical'])
  const weighted = Object.values(p.modelContributions).reduce((s, c) => s + c.weight * c.prediction, 0)
  assert.ok(Math.abs(weighted - p.prediction) < 1e-5)
  assert.equal(typeof p.latencyMs, 'number')
  assert.equal(p.degraded, false)
  assert.deepEqual(p.skipped, [])
  const names = engine.featureNames('market')
  const viaRow = engine.predictRow('market', new Float32Array(names.map((n) => rows[0][n])))
  assert.ok(Math.abs(viaRow.prediction - p.prediction) < 1e-6)
})

test('Float32Array batches match single rows, sync and async', async () => {
  const { engine } = marketEngine(quorum)
  const names = engine.featureNames('market')
  const some = rows.slice(0, 64)
  const matrix = new Float32Array(some.flatMap((r) => names.map((n) => r[n])))
  const batch = engine.predictBatch('market', matrix)
  assert.ok(batch.predictions instanceof Float32Array)
  assert.equal(batch.predictions.length, 64)
  assert.equal(batch.memberPredictions.length, 64 * 3)
  assert.deepEqual(batch.members, ['technical', 'fundamental', 'sentiment'])
  const singles = some.map((r) => engine.predict('market', featuresOf(engine, r)).prediction)
  singles.forEach((s, i) => assert.ok(Math.abs(s - batch.predictions[i]) < 1e-6))
  const viaPromise = await engine.predictBatchAsync('market', matrix)
  assert.deepEqual(Array.from(viaPromise.predictions), Array.from(batch.predictions))
  const single = await engine.predictAsync('market', featuresOf(engine, some[0]))
  assert.ok(Math.abs(single.prediction - singles[0]) < 1e-6)
  // Named columns in another order.
  const reversed = [...names].reverse()
  const reordered = new Float32Array(some.flatMap((r) => reversed.map((n) => r[n])))
  const out = engine.predictBatch('market', reordered, reversed)
  singles.forEach((s, i) => assert.ok(Math.abs(s - out.predictions[i]) < 1e-6))
})

test('many concurrent promises agree with synchronous calls', async () => {
  const { engine } = marketEngine(quorum)
  const requests = rows.slice(0, 40).map((r) => featuresOf(engine, r))
  const expected = requests.map((f) => engine.predict('market', f).prediction)
  const results = await Promise.all(Array.from({ length: 400 }, (_, i) => engine.predictAsync('market', requests[i % 40])))
  results.forEach((p, i) => assert.equal(p.prediction, expected[i % 40]))
})

test('prediction cache', () => {
  const { home } = marketEngine(quorum)
  const engine = new quorum.InferenceEngine(home, { cacheCapacity: 100 })
  const f = featuresOf(engine, rows[0])
  assert.equal(engine.predict('market', f).cached, false)
  assert.equal(engine.predict('market', f).cached, true)
})

test('outcomes, metrics and adaptive weights', () => {
  const { engine } = marketEngine(quorum)
  engine.createEnsemble({ name: 'adaptive', members: ['technical', 'fundamental', 'sentiment'], strategy: 'hedge' })
  for (const r of rows.slice(0, 50)) {
    const p = engine.predict('adaptive', featuresOf(engine, r))
    engine.recordOutcome(p.requestId, p.modelContributions.technical.prediction >= 0.5 ? 1 : 0)
  }
  const p = engine.predict('adaptive', featuresOf(engine, rows[0]))
  assert.equal(p.weightsEpoch, 50)
  const w = p.modelContributions
  assert.ok(w.technical.weight > w.fundamental.weight && w.technical.weight > w.sentiment.weight)
  const m = engine.metrics('adaptive')
  assert.equal(m.metrics.all_time.count, 50)
  assert.equal(m.ranking.length, 3)
  engine.flush()
})

test('metricsText is the Prometheus exposition of what was counted', () => {
  const { engine } = marketEngine(quorum)
  for (const r of rows.slice(0, 3)) engine.predict('market', featuresOf(engine, r))
  const text = engine.metricsText()
  assert.ok(text.includes('quorum_predictions_total{ensemble="market"} 3\n'))
  assert.ok(text.includes('# TYPE quorum_request_duration_seconds histogram\n'))
  assert.ok(text.includes('quorum_request_duration_seconds_count{ensemble="market"} 3\n'))
})

test('the inference log writes every prediction to the state store', async () => {
  const fs = require('node:fs')
  const os = require('node:os')
  const path = require('node:path')
  const { MODELS, manifest } = require('./helpers')
  const home = fs.mkdtempSync(path.join(os.tmpdir(), 'quorum-node-log-'))
  const engine = new quorum.InferenceEngine(home, { inferenceLog: { flushMs: 5 } })
  for (const m of manifest()) engine.registerModel(m.name, path.join(MODELS, `${m.name}.onnx`), m.features)
  engine.createEnsemble({ name: 'market', members: ['technical', 'fundamental', 'sentiment'] })
  for (const row of rows.slice(0, 20)) engine.predict('market', featuresOf(engine, row))
  const deadline = Date.now() + 10000
  while (engine.inferenceLogStats().written < 20 && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  assert.equal(engine.inferenceLogStats().written, 20)
  assert.equal(engine.inferenceLogStats().dropped, 0)
  assert.equal(engine.sharedStatus(), null)
  assert.throws(() => new quorum.InferenceEngine(home, { state: 'mysql://u:secret@h/q' }), (e) => e.code === 'config' && !e.message.includes('secret'))
})
