'use strict'
// quorum through Node against the same three models called with onnxruntime-node plus the weighted
// average written in JavaScript, in one run (`make bench-node`). Goal: quorum at least 3x faster for
// a single row and no slower for a 1024-row batch; predictAsync at most 2x predict and under
// onnxruntime-node's own async runs.
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const ort = require('onnxruntime-node')
const quorum = require('quorum-engine')

const REPO = process.env.QUORUM_REPO || path.resolve(__dirname, '..', '..')
const MODELS = path.join(REPO, 'examples', 'models')
const WEIGHTS = { technical: 0.4, fundamental: 0.4, sentiment: 0.2 }

function median(samples) {
  const s = [...samples].sort((a, b) => a - b)
  return s[Math.floor(s.length / 2)]
}

async function timed(fn, repeat) {
  for (let i = 0; i < 50; i++) await fn()
  const samples = []
  for (let i = 0; i < repeat; i++) {
    const start = process.hrtime.bigint()
    await fn()
    samples.push(Number(process.hrtime.bigint() - start) / 1000)
  }
  return median(samples)
}

async function main() {
  const manifest = Object.fromEntries(JSON.parse(fs.readFileSync(path.join(MODELS, 'manifest.json'), 'utf8')).models.map((m) => [m.name, m]))
  function makeEngine(fusion, native = true, models = MODELS) {
    const engine = new quorum.InferenceEngine(fs.mkdtempSync(path.join(os.tmpdir(), 'quorum-bench-')), { tracking: false, persistence: false, fusion, native })
    for (const name of Object.keys(WEIGHTS)) engine.registerModel(name, path.join(models, `${name}.onnx`), manifest[name].features, { kind: manifest[name].kind })
    engine.createEnsemble({ name: 'market', members: Object.keys(WEIGHTS), weights: Object.values(WEIGHTS) })
    return engine
  }
  // quorum fuses the three members into one ONNX model by default; the unfused engine runs them one by
  // one, as the JavaScript baseline does.
  const engine = makeEngine(true)
  const unfused = makeEngine(false)
  // Fusion across opsets (issue 21): on ONNX Runtime, the example models at their one opset and as three
  // exporters stamp them (examples/models/mixed: 13, 9 and 22), both fused.
  const oneOpset = makeEngine(true, false)
  const mixed = makeEngine(true, false, path.join(MODELS, 'mixed'))
  const mixedStatus = mixed.fusion('market')
  if (!mixedStatus.fused || mixedStatus.opsets['ai.onnx'] !== 22) throw new Error(`mixed opsets not fused: ${JSON.stringify(mixedStatus)}`)
  // (or, as the example models now do, runs them on native plans with no ONNX Runtime call at all).
  const status = engine.fusion('market')
  if (!status.fused && status.native.length === 0) throw new Error(`not fused: ${status.reason}`)
  const names = engine.featureNames('market')

  const options = { intraOpNumThreads: 1, interOpNumThreads: 1, executionProviders: ['cpu'] }
  const sessions = {}
  for (const name of Object.keys(WEIGHTS)) sessions[name] = await ort.InferenceSession.create(path.join(MODELS, `${name}.onnx`), options)
  const columns = Object.fromEntries(Object.keys(WEIGHTS).map((n) => [n, manifest[n].features.map((f) => names.indexOf(f))]))

  let seed = 7
  const random = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648) * 2 - 1
  const rows = 1024
  const matrix = Float32Array.from({ length: rows * names.length }, random)
  const row = Object.fromEntries(names.map((n, i) => [n, matrix[i]]))
  const oneRow = matrix.slice(0, names.length)

  async function rawSingle() {
    let total = 0
    for (const [name, session] of Object.entries(sessions)) {
      const x = Float32Array.from(manifest[name].features, (f) => row[f])
      const out = await session.run({ [session.inputNames[0]]: new ort.Tensor('float32', x, [1, x.length]) }, ['probabilities'])
      total += WEIGHTS[name] * out.probabilities.data[1]
    }
    return total
  }

  async function rawBatch() {
    const total = new Float32Array(rows)
    for (const [name, session] of Object.entries(sessions)) {
      const cols = columns[name]
      const x = new Float32Array(rows * cols.length)
      for (let r = 0; r < rows; r++) for (let c = 0; c < cols.length; c++) x[r * cols.length + c] = matrix[r * names.length + cols[c]]
      const out = await session.run({ [session.inputNames[0]]: new ort.Tensor('float32', x, [rows, cols.length]) }, ['probabilities'])
      for (let r = 0; r < rows; r++) total[r] += WEIGHTS[name] * out.probabilities.data[r * 2 + 1]
    }
    return total
  }

  const check = engine.predict('market', row).prediction
  if (Math.abs(check - (await rawSingle())) > 1e-5) throw new Error('quorum and onnxruntime-node disagree')

  const results = {
    'single_row/onnxruntime_node': await timed(rawSingle, 3000),
    'single_row/quorum_node_sync': await timed(() => engine.predict('market', row), 3000),
    'single_row/quorum_node_row': await timed(() => engine.predictRow('market', oneRow), 3000),
    'single_row/quorum_node_async': await timed(() => engine.predictAsync('market', row), 3000),
    // On ONNX Runtime (the fused model) rather than native plans.
    'single_row/fused_one_opset_async': await timed(() => oneOpset.predictAsync('market', row), 3000),
    'single_row/quorum_node_unfused': await timed(() => unfused.predict('market', row), 3000),
    'single_row/fused_one_opset': await timed(() => oneOpset.predict('market', row), 3000),
    'single_row/fused_mixed_opsets': await timed(() => mixed.predict('market', row), 3000),
    'batch_1024/onnxruntime_node': await timed(rawBatch, 200),
    'batch_1024/quorum_node_sync': await timed(() => engine.predictBatch('market', matrix), 200),
    'batch_1024/quorum_node_unfused': await timed(() => unfused.predictBatch('market', matrix), 200),
  }
  for (const [label, micros] of Object.entries(results)) console.log(`${label.padEnd(32)} ${micros.toFixed(1).padStart(10)} µs (median)`)
  const single = results['single_row/onnxruntime_node'] / results['single_row/quorum_node_sync']
  const batch = results['batch_1024/onnxruntime_node'] / results['batch_1024/quorum_node_sync']
  const unfusedSingle = results['single_row/onnxruntime_node'] / results['single_row/quorum_node_unfused']
  const across = results['single_row/fused_mixed_opsets'] / results['single_row/fused_one_opset']
  const asyncRatio = results['single_row/quorum_node_async'] / results['single_row/quorum_node_sync']
  const asyncOnOrt = results['single_row/fused_one_opset_async'] / results['single_row/fused_one_opset']
  const asyncVsOrt = results['single_row/fused_one_opset_async'] / results['single_row/onnxruntime_node']
  console.log(`predictAsync: ${asyncRatio.toFixed(2)}x predict (${asyncOnOrt.toFixed(2)}x on ONNX Runtime; goal at most 2x); on ONNX Runtime ${asyncVsOrt.toFixed(2)}x onnxruntime-node's async runs (goal under 1x)`)
  console.log(`fused across opsets vs at one opset (ONNX Runtime, single row): ${((across - 1) * 100).toFixed(1)}%`)
  console.log(`single row: quorum ${single.toFixed(2)}x faster (${unfusedSingle.toFixed(2)}x unfused); 1024 rows: ${batch.toFixed(2)}x (onnxruntime-node ${require('onnxruntime-node/package.json').version})`)
}

main().catch((error) => {
  console.error(error)
  process.exit(1)
})
