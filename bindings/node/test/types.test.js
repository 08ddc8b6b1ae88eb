'use strict'
// The installed package's typings, read by the TypeScript compiler: they compile under `strict`,
// never say `any`, document every public method, and describe what the methods really return —
// each result below is checked against the declared return type, key by key (no key missing, none
// unexpected, every value of the declared kind). Also: `npm pack` ships exactly the intended files.
const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { execFileSync } = require('node:child_process')
const quorum = require('quorum-engine')
const { REPO, MODELS, manifest, holdoutRows, marketEngine, featuresOf } = require('./helpers')

const ts = require(path.join(REPO, 'bindings', 'node', 'node_modules', 'typescript'))
const PACKAGE = path.dirname(require.resolve('quorum-engine/package.json'))
const program = ts.createProgram([path.join(PACKAGE, 'index.d.ts')], {
  strict: true,
  noEmit: true,
  target: ts.ScriptTarget.ES2020,
  types: [],
})
const checker = program.getTypeChecker()
const declarationFiles = program.getSourceFiles().filter((f) => f.fileName.startsWith(PACKAGE))
const exported = checker.getExportsOfModule(checker.getSymbolAtLocation(program.getSourceFile(path.join(PACKAGE, 'index.d.ts'))))

function exportedSymbol(name) {
  const symbol = exported.find((s) => s.name === name)
  assert.ok(symbol, `index.d.ts exports ${name}`)
  return symbol.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(symbol) : symbol
}

function typeOf(symbol) {
  // Properties of mapped types (Partial, Record) have no declaration of their own.
  return checker.getTypeOfSymbol(symbol)
}

/** The declared type of `Class.method`'s result (a Promise's value for async methods). */
function returnType(className, method) {
  const instance = checker.getDeclaredTypeOfSymbol(exportedSymbol(className))
  const member = checker.getPropertyOfType(instance, method)
  assert.ok(member, `${className}.${method} is declared`)
  const [signature] = checker.getSignaturesOfType(typeOf(member), ts.SignatureKind.Call)
  const type = checker.getReturnTypeOfSignature(signature)
  return checker.getAwaitedType(type) ?? type
}

/** The declared type of `Class.method`'s parameter `index`. */
function parameterType(className, method, index) {
  const instance = checker.getDeclaredTypeOfSymbol(exportedSymbol(className))
  const [signature] = checker.getSignaturesOfType(typeOf(checker.getPropertyOfType(instance, method)), ts.SignatureKind.Call)
  return typeOf(signature.getParameters()[index])
}

const TYPED_ARRAYS = new Set(['Float32Array', 'Float64Array', 'Uint32Array', 'BigUint64Array'])

/** Every way `value` fails to be a `type`, as `path: reason` strings (empty: it conforms). */
function mismatches(value, type, where) {
  const f = type.flags
  const show = () => checker.typeToString(type)
  if (f & (ts.TypeFlags.Any | ts.TypeFlags.Unknown)) return [`${where}: declared ${show()}`]
  if (type.isUnion()) {
    const each = type.types.map((t) => mismatches(value, t, where))
    if (each.some((m) => m.length === 0)) return []
    return [`${where}: ${JSON.stringify(value)?.slice(0, 80)} is none of ${show()} (${each.flat().slice(0, 3).join('; ')})`]
  }
  if (f & ts.TypeFlags.Null) return value === null ? [] : [`${where}: expected null`]
  if (f & (ts.TypeFlags.Undefined | ts.TypeFlags.Void)) return value === undefined ? [] : [`${where}: expected undefined`]
  if (f & ts.TypeFlags.StringLiteral) return value === type.value ? [] : [`${where}: expected ${show()}, got ${JSON.stringify(value)}`]
  if (f & ts.TypeFlags.NumberLiteral) return value === type.value ? [] : [`${where}: expected ${show()}`]
  if (f & ts.TypeFlags.BooleanLiteral) return String(value) === show() ? [] : [`${where}: expected ${show()}`]
  if (f & ts.TypeFlags.String) return typeof value === 'string' ? [] : [`${where}: expected a string, got ${JSON.stringify(value)}`]
  if (f & ts.TypeFlags.Number) return typeof value === 'number' ? [] : [`${where}: expected a number, got ${JSON.stringify(value)}`]
  if (f & ts.TypeFlags.Boolean) return typeof value === 'boolean' ? [] : [`${where}: expected a boolean`]
  if (type.isIntersection()) return type.types.flatMap((t) => mismatches(value, t, where).filter((m) => !m.includes('unexpected key')))
  if (checker.isTupleType(type)) {
    const items = checker.getTypeArguments(type)
    if (!Array.isArray(value) || value.length !== items.length) return [`${where}: expected a ${items.length}-tuple`]
    return items.flatMap((t, i) => mismatches(value[i], t, `${where}[${i}]`))
  }
  if (checker.isArrayType(type)) {
    if (!Array.isArray(value)) return [`${where}: expected an array`]
    const [item] = checker.getTypeArguments(type)
    return value.flatMap((v, i) => mismatches(v, item, `${where}[${i}]`))
  }
  const name = type.getSymbol()?.name
  if (TYPED_ARRAYS.has(name)) return value instanceof globalThis[name] ? [] : [`${where}: expected a ${name}`]
  if (f & ts.TypeFlags.Object) {
    if (value === null || typeof value !== 'object' || Array.isArray(value)) return [`${where}: expected an object, got ${JSON.stringify(value)?.slice(0, 60)}`]
    const found = []
    const properties = checker.getPropertiesOfType(type)
    for (const p of properties) {
      const optional = (p.flags & ts.SymbolFlags.Optional) !== 0
      if (!(p.name in value)) {
        if (!optional) found.push(`${where}.${p.name}: missing`)
        continue
      }
      found.push(...mismatches(value[p.name], typeOf(p), `${where}.${p.name}`))
    }
    const index = checker.getIndexInfoOfType(type, ts.IndexKind.String)
    for (const key of Object.keys(value)) {
      if (properties.some((p) => p.name === key)) continue
      if (index) found.push(...mismatches(value[key], index.type, `${where}[${JSON.stringify(key)}]`))
      else found.push(`${where}.${key}: unexpected key (not in ${show()})`)
    }
    return found
  }
  return [`${where}: cannot check a ${show()}`]
}

function assertConforms(value, type, label) {
  const found = mismatches(value, type, label)
  assert.deepEqual(found, [], `${label} does not match its declared type ${checker.typeToString(type)}`)
}

test('the typings compile under strict and never say any', () => {
  const diagnostics = ts.getPreEmitDiagnostics(program).map((d) => ts.flattenDiagnosticMessageText(d.messageText, '\n'))
  assert.deepEqual(diagnostics, [])
  assert.deepEqual(declarationFiles.map((f) => path.basename(f.fileName)).sort(), ['index.d.ts', 'native.d.ts', 'results.d.ts'])
  const anys = []
  for (const file of declarationFiles) {
    const visit = (node) => {
      if (node.kind === ts.SyntaxKind.AnyKeyword) {
        const { line } = file.getLineAndCharacterOfPosition(node.getStart(file))
        anys.push(`${path.basename(file.fileName)}:${line + 1}`)
      }
      ts.forEachChild(node, visit)
    }
    visit(file)
  }
  assert.deepEqual(anys, [])
})

test('every public class member and function has JSDoc', () => {
  const undocumented = []
  for (const file of declarationFiles) {
    const visit = (node) => {
      const named = ts.isClassDeclaration(node) || ts.isFunctionDeclaration(node) || ts.isInterfaceDeclaration(node)
      const member = ts.isMethodDeclaration(node) || ts.isGetAccessorDeclaration(node) || ts.isConstructorDeclaration(node)
      if ((named || member) && ts.getJSDocCommentsAndTags(node).length === 0) {
        const owner = member && node.parent.name ? `${node.parent.name.text}.` : ''
        undocumented.push(`${path.basename(file.fileName)}: ${owner}${node.name ? node.name.getText(file) : 'constructor'}`)
      }
      ts.forEachChild(node, visit)
    }
    visit(file)
  }
  assert.deepEqual(undocumented, [])
})

test('what the engine, registry and optimizer return matches the typings', async () => {
  const { engine, home } = marketEngine(quorum)
  const data = path.join(REPO, 'examples', 'data', 'holdout.csv')
  const check = (className, method, value) => assertConforms(value, returnType(className, method), `${className}.${method}()`)
  const technical = manifest().find((m) => m.name === 'technical')

  check('InferenceEngine', 'registerModel', engine.registerModel('technical', path.join(MODELS, 'technical.onnx'), technical.features, { kind: 'technical' }))
  check('InferenceEngine', 'listModels', engine.listModels())
  const withFallback = { name: 'market', members: ['technical@2', 'fundamental', { model: 'sentiment', fallback: 'technical' }], weights: [0.4, 0.4, 0.2] }
  assertConforms(withFallback, parameterType('InferenceEngine', 'createEnsemble', 0), 'createEnsemble(config)')
  check('InferenceEngine', 'createEnsemble', engine.createEnsemble(withFallback))
  const adaptive = { name: 'adaptive', members: ['technical', 'fundamental', 'sentiment'], strategy: 'hedge', regime: { feature: 'ret_1d', strategies: { high: 'majority' } }, serveStale: true, latencyBudgetMs: 50 }
  assertConforms(adaptive, parameterType('InferenceEngine', 'createEnsemble', 0), 'createEnsemble(config)')
  check('InferenceEngine', 'createEnsemble', engine.createEnsemble(adaptive))

  const rows = holdoutRows().slice(0, 150)
  for (const r of rows) {
    const p = engine.predict('market', featuresOf(engine, r))
    check('InferenceEngine', 'predict', p)
    engine.recordOutcome(p.requestId, r.next_day_up, 1)
    const q = engine.predict('adaptive', Object.fromEntries(engine.featureNames('adaptive').map((n) => [n, r[n]])))
    engine.recordOutcome(q.requestId, r.next_day_up)
  }
  check('InferenceEngine', 'predictAsync', await engine.predictAsync('market', featuresOf(engine, rows[0])))
  const names = engine.featureNames('market')
  const matrix = new Float32Array(rows.slice(0, 8).flatMap((r) => names.map((n) => r[n])))
  check('InferenceEngine', 'predictBatch', engine.predictBatch('market', matrix))
  check('InferenceEngine', 'predictBatchAsync', await engine.predictBatchAsync('market', matrix))
  check('InferenceEngine', 'replicas', engine.replicas())
  check('InferenceEngine', 'fusion', engine.fusion('market'))
  check('InferenceEngine', 'inferenceLogStats', engine.inferenceLogStats())
  check('InferenceEngine', 'sharedStatus', engine.sharedStatus())
  check('InferenceEngine', 'metrics', engine.metrics('market'))
  check('InferenceEngine', 'metrics', engine.metrics('adaptive'))
  check('InferenceEngine', 'driftEvents', engine.driftEvents())

  const experiment = { name: 'ab', ensemble: 'market', control: 1, treatment: 2, steps: [50], metric: 'business', guardrails: { max_error_rate: 0.5 } }
  assertConforms(experiment, parameterType('InferenceEngine', 'startExperiment', 0), 'startExperiment(config)')
  check('InferenceEngine', 'startExperiment', engine.startExperiment(experiment))
  for (const r of rows.slice(0, 80)) {
    const p = engine.predict('market', featuresOf(engine, r), null, `user-${r.ret_1d}`)
    engine.recordOutcome(p.requestId, r.next_day_up, r.ret_1d)
  }
  check('InferenceEngine', 'experimentStatus', engine.experimentStatus('ab'))
  check('InferenceEngine', 'pauseExperiment', engine.pauseExperiment('ab'))
  check('InferenceEngine', 'resumeExperiment', engine.resumeExperiment('ab'))
  check('InferenceEngine', 'experiments', engine.experiments())
  check('InferenceEngine', 'stopExperiment', engine.stopExperiment('ab', 'checked'))

  check('InferenceEngine', 'benchmark', engine.benchmark('technical', data, 'next_day_up'))
  check('InferenceEngine', 'optimize', engine.optimize('technical', data, 'next_day_up', { methods: ['int8-dynamic', 'native'] }))
  check('Optimizer', 'benchmark', engine.optimizer.benchmark('sentiment', data))
  check('Optimizer', 'quantize', engine.optimizer.quantize(path.join(MODELS, 'technical.onnx'), path.join(home, 'q.onnx'), 'int8-dynamic'))

  const registry = engine.registry
  check('Registry', 'show', registry.show('technical'))
  check('Registry', 'verify', registry.verify('technical@1'))
  check('Registry', 'list', registry.list())
  const standalone = new quorum.Registry(fs.mkdtempSync(path.join(os.tmpdir(), 'quorum-types-')))
  check('Registry', 'register', standalone.register('t', path.join(MODELS, 'technical.onnx'), technical.features))

  const logging = new quorum.InferenceEngine(fs.mkdtempSync(path.join(os.tmpdir(), 'quorum-types-')), { inferenceLog: true, defaultModel: { replicas: [1, 2], batching: { maxBatch: 64 } } })
  check('InferenceEngine', 'inferenceLogStats', logging.inferenceLogStats())
})

test('a result that differs from its typing is caught', () => {
  // The checker itself: a missing key, an unexpected key and a wrong kind are each reported.
  const type = returnType('InferenceEngine', 'fusion')
  const good = { fused: true, sessions: 1, native: [], members: ['a', 'b'] }
  assert.deepEqual(mismatches(good, type, 'fusion'), [])
  assert.match(mismatches({ ...good, sessions: undefined }, type, 'fusion').join(), /sessions/)
  assert.match(mismatches({ fused: true, native: [], members: [] }, type, 'fusion').join(), /sessions: missing/)
  assert.match(mismatches({ ...good, extra: 1 }, type, 'fusion').join(), /extra: unexpected key/)
  assert.match(mismatches({ ...good, members: [1] }, type, 'fusion').join(), /members\[0\]: expected a string/)
})

test('npm pack ships exactly the package files', () => {
  const packed = execFileSync('npm', ['pack', '--dry-run', '--json', '--loglevel=error'], { cwd: path.join(REPO, 'bindings', 'node'), encoding: 'utf8' })
  const files = JSON.parse(packed)[0].files.map((f) => f.path).sort()
  const native = files.filter((f) => /^quorum\.[a-z0-9-]+\.node$/.test(f))
  assert.equal(native.length, 1, `one native addon: ${native}`)
  assert.deepEqual(files.filter((f) => !native.includes(f)), ['LICENSE', 'README.md', 'index.d.ts', 'index.js', 'native.d.ts', 'package.json', 'results.d.ts'])
})

test('the package, its addon and the crate share one version', () => {
  const { version } = JSON.parse(fs.readFileSync(path.join(PACKAGE, 'package.json'), 'utf8'))
  assert.equal(quorum.version, version)
  const workspace = fs.readFileSync(path.join(REPO, 'Cargo.toml'), 'utf8').match(/^version = "(.*)"$/m)[1]
  assert.equal(version, workspace)
})
