'use strict'
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

// The repository (for the example models and data); the package under test is resolved normally,
// so that `make node-test` exercises the installed tarball.
const REPO = process.env.QUORUM_REPO || path.resolve(__dirname, '..', '..', '..')
const MODELS = path.join(REPO, 'examples', 'models')

function manifest() {
  return JSON.parse(fs.readFileSync(path.join(MODELS, 'manifest.json'), 'utf8')).models
}

function holdoutRows() {
  const [header, ...lines] = fs.readFileSync(path.join(REPO, 'examples', 'data', 'holdout.csv'), 'utf8').trim().split('\n')
  const names = header.split(',')
  return lines
    .map((line) => Object.fromEntries(line.split(',').map((v, i) => [names[i], Number(v)])))
    .filter((row) => names.slice(1).every((n) => Number.isFinite(row[n])))
}

function marketEngine(quorum) {
  const home = fs.mkdtempSync(path.join(os.tmpdir(), 'quorum-node-'))
  const engine = new quorum.InferenceEngine(home)
  for (const m of manifest()) {
    engine.registerModel(m.name, path.join(MODELS, `${m.name}.onnx`), m.features, { kind: m.kind })
  }
  engine.createEnsemble({ name: 'market', members: ['technical', 'fundamental', 'sentiment'], weights: [0.4, 0.4, 0.2] })
  return { engine, home }
}

function featuresOf(engine, row) {
  return Object.fromEntries(engine.featureNames('market').map((n) => [n, row[n]]))
}

module.exports = { REPO, MODELS, manifest, holdoutRows, marketEngine, featuresOf }
