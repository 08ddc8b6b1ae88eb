'use strict'
const test = require('node:test')
const assert = require('node:assert/strict')
const quorum = require('quorum-engine')
const { holdoutRows, marketEngine, featuresOf } = require('./helpers')

function experimentEngine() {
  const { engine } = marketEngine(quorum)
  engine.createEnsemble({ name: 'market', members: ['technical', 'fundamental', 'sentiment'], weights: [0.2, 0.5, 0.3] })
  const started = engine.startExperiment({ name: 'ab', ensemble: 'market', control: 1, treatment: 2, steps: [50], metric: 'business' })
  assert.equal(started.state, 'running')
  assert.equal(started.arms.treatment.version, 2)
  const names = engine.featureNames('market')
  const rows = holdoutRows().filter((r) => names.every((n) => Number.isFinite(r[n]))).slice(0, 100)
  assert.equal(rows.length, 100)
  return { engine, names, rows }
}

test('outcomes with a business value reach the arm that predicted', () => {
  const { engine, rows } = experimentEngine()
  const versions = new Set()
  rows.forEach((r, i) => {
    const p = engine.predict('market', featuresOf(engine, r))
    versions.add(p.ensembleVersion)
    assert.equal(p.ensembleVersion, p.experiment.arm === 'treatment' ? 2 : 1)
    engine.recordOutcome(p.requestId, 1, (i % 5) - 2)
  })
  assert.deepEqual([...versions].sort(), [1, 2])
  const status = engine.experimentStatus('ab')
  for (const field of ['name', 'state', 'step', 'arms', 'p_value', 'decisions']) assert.ok(field in status, field)
  assert.equal(status.arms.control.outcomes + status.arms.treatment.outcomes, 100)
  assert.throws(() => engine.recordOutcome(1, 1, Infinity), (e) => e.code === 'outcome')
})

test('a routing key keeps its arm on every way to predict', async () => {
  const { engine, names, rows } = experimentEngine()
  const features = featuresOf(engine, rows[0])
  const row = new Float32Array(names.map((n) => rows[0][n]))
  const arms = new Set()
  for (let i = 0; i < 20; i++) {
    const key = `acct-${i}`
    const first = engine.predict('market', features, undefined, key)
    assert.equal(first.experiment.name, 'ab')
    arms.add(first.experiment.arm)
    assert.equal(Object.keys(first.modelContributions).length, 3)
    assert.deepEqual(engine.predict('market', features, undefined, key).experiment, first.experiment)
    assert.deepEqual(engine.predictRow('market', row, undefined, key).experiment, first.experiment)
    assert.deepEqual((await engine.predictAsync('market', features, key)).experiment, first.experiment)
  }
  assert.deepEqual([...arms].sort(), ['control', 'treatment'])
})

test('a paused or stopped experiment leaves predictions untagged', () => {
  const { engine, rows } = experimentEngine()
  assert.equal(engine.pauseExperiment('ab').state, 'paused')
  assert.equal(engine.predict('market', featuresOf(engine, rows[0])).experiment, undefined)
  assert.equal(engine.resumeExperiment('ab').state, 'running')
  assert.equal(engine.stopExperiment('ab', 'done').state, 'stopped')
  assert.equal(engine.predict('market', featuresOf(engine, rows[0]), undefined, 'acct-1').experiment, undefined)
  assert.equal(engine.experiments().length, 1)
  assert.throws(() => engine.resumeExperiment('ab'), (e) => e.code === 'config')
})
