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

test('predictAsync of a slow ensemble leaves the event loop free', async () => {
  const { engine } = marketEngine(quorum)
  const features = featuresOf(engine, rows[0])
  const expected = engine.predict('market', features).prediction
  engine.injectFault('sentiment', 'slow', 60) // under the 100 ms latency budget
  // The first slow run teaches the engine that its runs are slow; then requests queue.
  await engine.predictAsync('market', features)
  let ticks = 0
  const timer = setInterval(() => ticks++, 5)
  const started = Date.now()
  const p = await engine.predictAsync('market', features)
  clearInterval(timer)
  assert.ok(!p.degraded && Math.abs(p.prediction - expected) < 1e-6, JSON.stringify(p))
  assert.ok(Date.now() - started >= 50)
  // 60 ms or more on a dispatcher: the loop ticked meanwhile (every 5 ms), not once at the end.
  assert.ok(ticks >= 4, `${ticks} ticks`)
})

test('prediction cache', () => {
  const { home } = marketEngine(quorum)
  // A second engine on the home reads it without writing state (one writer per state file).
  const engine = new quorum.InferenceEngine(home, { cacheCapacity: 100, persistence: false })
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

for (const strategy of ['mlpol', 'ewa', 'boa']) {
  test(`online rule ${strategy} takes its options from the configuration`, () => {
    const { engine } = marketEngine(quorum)
    const name = `online-${strategy}`
    const config = { name, members: ['technical', 'fundamental', 'sentiment'], strategy, online: { floor: 0, gradient: true } }
    const saved = engine.createEnsemble(config)
    assert.equal(saved.online.floor, 0)
    assert.equal(saved.strategy, strategy)
    for (const r of rows.slice(0, 60)) {
      const p = engine.predict(name, featuresOf(engine, r))
      engine.recordOutcome(p.requestId, p.modelContributions.technical.prediction >= 0.5 ? 1 : 0)
    }
    const w = engine.predict(name, featuresOf(engine, rows[0])).modelContributions
    assert.ok(w.technical.weight > w.fundamental.weight && w.technical.weight > w.sentiment.weight, JSON.stringify(w))
    assert.throws(() => engine.createEnsemble({ ...config, online: { floor: 2 } }), (e) => e.code === 'config')
  })
}

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

test('bad arguments are coded errors, one rule with Python', async () => {
  const { engine, home } = marketEngine(quorum)
  for (const bad of [undefined, null, 7, 'x']) {
    assert.throws(() => engine.predict('market', bad), (e) => e.code === 'invalid_input', String(bad))
  }
  await assert.rejects(engine.predictAsync('market', undefined), (e) => e.code === 'invalid_input')
  const names = engine.featureNames('market')
  const values = names.map((n) => rows[0][n])
  const f32 = engine.predictRow('market', new Float32Array(values))
  assert.equal(engine.predictRow('market', new Float64Array(values)).prediction, f32.prediction)
  assert.equal(engine.predictRow('market', values).prediction, f32.prediction)
  assert.throws(() => engine.predictRow('market', values.map(() => true)), (e) => e.code === 'invalid_input')
  const withBool = { ...featuresOf(engine, rows[0]), vix: true }
  assert.throws(() => engine.predict('market', withBool), (e) => e.code === 'invalid_input')
  for (const bad of [-1, 0, 1.5, 2 ** 32, NaN]) {
    assert.throws(() => engine.setDefaultVersion('technical', bad), (e) => e.code === 'invalid_name', String(bad))
    assert.throws(
      () => engine.registerModel('vh', `${require('./helpers').MODELS}/technical.onnx`, engine.registry.show('technical').features, { version: bad }),
      (e) => e.code === 'invalid_name',
    )
  }
  assert.deepEqual(engine.registry.versions('vh'), [])
  assert.throws(() => new quorum.InferenceEngine(undefined), (e) => e.code === 'invalid_input')
  assert.throws(() => new quorum.InferenceEngine(home), (e) => e.code === 'locked' && e.message.includes('pid'))
  assert.throws(() => engine.registry.remove('sentiment'), (e) => e.code === 'in_use' && e.message.includes('market@'))
  engine.registry.remove('sentiment', null, true)
  assert.ok(!engine.listModels().some((m) => m.name === 'sentiment'))
})

test('faults can be injected to rehearse failures', () => {
  const { engine } = marketEngine(quorum)
  const f = featuresOf(engine, rows[0])
  engine.injectFault('sentiment', 'fail')
  const p = engine.predict('market', f)
  assert.equal(p.degraded, true)
  engine.injectFault('sentiment', 'none')
  assert.equal(engine.predict('market', f).degraded, false)
  assert.throws(() => engine.injectFault('sentiment', 'slow'), (e) => e.code === 'invalid_input')
  const bounded = new quorum.InferenceEngine(require('node:fs').mkdtempSync(require('node:path').join(require('node:os').tmpdir(), 'q-')), { tracking: { window: 50, windowSeconds: 60 } })
  assert.ok(bounded)
})
