'use strict'
// The README's JavaScript example runs as written (from the repository root).
const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { REPO } = require('./helpers')

test('README example', () => {
  const text = fs.readFileSync(path.join(REPO, 'README.md'), 'utf8')
  const blocks = [...text.matchAll(/```js\n([\s\S]*?)```/g)].map((m) => m[1])
  assert.ok(blocks.length > 0, 'README.md has no js example')
  const cwd = process.cwd()
  process.env.QUORUM_EXAMPLE_HOME = fs.mkdtempSync(path.join(os.tmpdir(), 'quorum-readme-'))
  process.chdir(REPO)
  try {
    for (const block of blocks) new Function('require', block)(require)
  } finally {
    process.chdir(cwd)
  }
})
