// Run the http-cache-tests suite against one HTTP cache, as the package's own cli.mjs does
// (its test list plus the Surrogate-Control tests), and print one JSON object:
//   {"results": {id: true | [kind, message]},
//    "tests": {id: {"suite", "name", "kind", "depends_on"}}}
// Tests only a browser runs are left out. The verdicts (pass, fail, not run because a
// dependency failed, ...) are worked out in Python (tests/conformance/cache_tests.py).
// Usage: node run-cache-tests.mjs <package dir> <base URL of the cache> [test id ...]
import path from 'path'
import { createRequire } from 'module'
import { pathToFileURL } from 'url'

const [pkgDir, baseUrl, ...only] = process.argv.slice(2)
const load = async rel => import(pathToFileURL(path.join(pkgDir, rel)).href)

const { runTests, getResults } = await load('client/runner.mjs')
const suites = (await load('tests/index.mjs')).default
suites.push((await load('tests/surrogate-control.mjs')).default)
const fetch = createRequire(path.join(pkgDir, 'package.json'))('node-fetch')

const meta = {}
for (const suite of suites) {
  for (const test of suite.tests) {
    if (test.browser_only === true) continue
    meta[test.id] = { suite: suite.id, name: test.name, kind: test.kind || 'required', depends_on: test.depends_on || [] }
  }
}
const selected = only.length === 0
  ? suites
  : suites.map(suite => ({ ...suite, tests: suite.tests.filter(test => only.includes(test.id)) }))
await runTests(selected, fetch, false, baseUrl)
process.stdout.write(JSON.stringify({ results: getResults(), tests: meta }) + '\n')
