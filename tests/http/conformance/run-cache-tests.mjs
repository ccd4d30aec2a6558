// Run the http-cache-tests suite against one HTTP cache, as the package's own cli.mjs does
// (its test list plus the Surrogate-Control tests), and print one JSON object:
//   {"results": {id: true | [kind, message]},
//    "tests": {id: {"suite", "name", "kind", "depends_on", "requests"}}}
// Tests only a browser runs are left out. The verdicts (pass, fail, not run because a
// dependency failed, ...) are worked out in Python (tests/http/conformance/cache_tests.py).
//
// Every request goes on its own connection (an http.Agent without keep-alive), as the
// suite's requests did under the Node versions it was written for. Node 19+ keeps
// connections alive by default, and a request the client sends on a pooled connection
// the cache is closing as idle (Varnish's timeout_idle, 5 s, the same as Node's own
// idle timeout) dies with "socket hang up": on a loaded machine that failed a handful of
// random tests per run, against both caches (Varnish's counter MAIN.sc_rx_close_idle).
// Usage: node run-cache-tests.mjs <package dir> <base URL of the cache> [test id ...]
import http from 'http'
import path from 'path'
import { createRequire } from 'module'
import { pathToFileURL } from 'url'

const [pkgDir, baseUrl, ...only] = process.argv.slice(2)
const load = async rel => import(pathToFileURL(path.join(pkgDir, rel)).href)

const { runTests, getResults } = await load('client/runner.mjs')
const suites = (await load('tests/index.mjs')).default
suites.push((await load('tests/surrogate-control.mjs')).default)
const nodeFetch = createRequire(path.join(pkgDir, 'package.json'))('node-fetch')
const agent = new http.Agent({ keepAlive: false })
const fetch = (url, init = {}) => nodeFetch(url, { ...init, agent })

const meta = {}
for (const suite of suites) {
  for (const test of suite.tests) {
    if (test.browser_only === true) continue
    meta[test.id] = {
      suite: suite.id,
      name: test.name,
      kind: test.kind || 'required',
      depends_on: test.depends_on || [],
      requests: test.requests
    }
  }
}
const selected = only.length === 0
  ? suites
  : suites.map(suite => ({ ...suite, tests: suite.tests.filter(test => only.includes(test.id)) }))
await runTests(selected, fetch, false, baseUrl)
process.stdout.write(JSON.stringify({ results: getResults(), tests: meta }) + '\n')
