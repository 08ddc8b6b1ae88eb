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

// A one-model Open Inference Protocol server in a child process (calls here are synchronous):
// `far`, y = sigmoid(0.01 * sum(x)), answering with the Authorization header it saw.
const OIP_SERVER = `
const http = require('node:http')
const width = Number(process.argv[1])
const server = http.createServer((req, res) => {
  let body = ''
  req.on('data', (c) => { body += c })
  req.on('end', () => {
    const send = (o) => { res.setHeader('content-type', 'application/json'); res.end(JSON.stringify(o)) }
    if (req.headers.authorization !== 'Bearer node-secret-1') { res.statusCode = 401; return send({ error: 'unauthorized' }) }
    if (req.method === 'GET' && req.url === '/v2/models/far') {
      return send({ name: 'far', inputs: [{ name: 'x', datatype: 'FP32', shape: [-1, width] }], outputs: [{ name: 'y', datatype: 'FP32', shape: [-1, 1] }] })
    }
    if (req.method === 'GET') return send({ name: 'node', version: '1', extensions: [] })
    const x = JSON.parse(body).inputs[0]
    const rows = x.shape[0]
    const y = []
    for (let r = 0; r < rows; r++) y.push(1 / (1 + Math.exp(-0.01 * x.data.slice(r * width, (r + 1) * width).reduce((a, b) => a + b, 0))))
    send({ model_name: 'far', outputs: [{ name: 'y', datatype: 'FP32', shape: [rows, 1], data: y }] })
  })
})
server.listen(0, '127.0.0.1', () => console.log(server.address().port))
setTimeout(() => process.exit(0), 60000)
`

test('a remote model registers by url and answers in an ensemble', async () => {
  const { spawn } = require('node:child_process')
  const m = manifest()[0]
  const child = spawn(process.execPath, ['-e', OIP_SERVER, String(m.features.length)], { stdio: ['ignore', 'pipe', 'inherit'] })
  try {
    const port = await new Promise((resolve) => child.stdout.once('data', (d) => resolve(String(d).trim())))
    const url = `http://127.0.0.1:${port}/v2/models/far`
    const home = fs.mkdtempSync(path.join(os.tmpdir(), 'quorum-node-remote-'))
    const engine = new quorum.InferenceEngine(home, { persistence: false })
    assert.throws(() => engine.registry.registerRemote('far', url, m.features), (e) => e.code === quorum.ErrorCode.MODEL_LOAD)
    process.env.QUORUM_NODE_TEST_TOKEN = 'node-secret-1'
    const meta = engine.registry.registerRemote('far', url, m.features, { tokenEnv: 'QUORUM_NODE_TEST_TOKEN', output: 'y', hedge: true })
    assert.deepEqual([meta.remote.url, meta.remote.token_env, meta.remote.hedge], [url, 'QUORUM_NODE_TEST_TOKEN', true])
    assert.ok(!JSON.stringify(meta).includes('node-secret-1'))
    engine.registerModel(m.name, path.join(MODELS, `${m.name}.onnx`), m.features)
    engine.createEnsemble({ name: 'desk', members: [m.name, 'far'] })
    const row = new Float32Array(m.features.length).fill(0.5)
    const p = engine.predictRow('desk', row)
    assert.equal(p.degraded, false)
    assert.ok(Math.abs(p.modelContributions.far.prediction - 1 / (1 + Math.exp(-0.005 * row.length))) < 1e-6)
    assert.deepEqual(engine.replicas('far')[0].executor, { kind: 'remote', url })
  } finally {
    child.kill()
  }
})
