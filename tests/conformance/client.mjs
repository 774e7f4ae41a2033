// Runs the shared-cache tests of http-cache-tests through a cache and writes the raw results.
//
//   node client.mjs BASE_URL OUT.json [TEST_ID]
//
// BASE_URL is the cache under test (e.g. http://127.0.0.1:8080, no trailing slash); it must
// forward /config/, /test/ and /state/ to the suite's origin (origin.mjs). The results file is
// the suite's own format: { "test-id": true | [ "ErrorName", "message" ], ... }, as its CLI
// prints. With TEST_ID only that test runs, and the requests and responses are dumped on stdout.
//
// Unlike the suite's CLI, every request has a time limit (CONFORMANCE_REQUEST_TIMEOUT_MS,
// default 20000), so one request the cache never answers fails that test instead of hanging
// the run.

import fs from 'fs'
import process from 'process'
import fetch from 'node-fetch'

import { runTests, getResults } from 'http-cache-tests/client/runner.mjs'
import { sharedSuites } from './tests.mjs'

const [base, outFile, onlyId] = process.argv.slice(2)
if (!base || !outFile) {
  console.error('usage: node client.mjs BASE_URL OUT.json [TEST_ID]')
  process.exit(2)
}
const timeoutMs = parseInt(process.env.CONFORMANCE_REQUEST_TIMEOUT_MS || '20000', 10)

let suites = sharedSuites
if (onlyId) {
  suites = []
  for (const suite of sharedSuites) {
    const test = suite.tests.find(t => t.id === onlyId)
    if (test) {
      test.dump = true
      suites.push({ ...suite, tests: [test] })
    }
  }
  if (suites.length === 0) {
    console.error(`client: no shared-cache test with id ${onlyId}`)
    process.exit(2)
  }
}

// node-fetch 2 takes a per-request `timeout` (ms) and fails the request with a FetchError.
const timedFetch = (url, init = {}) => fetch(url, { ...init, timeout: timeoutMs })

runTests(suites, timedFetch, false, base.replace(/\/+$/, ''))
  .then(() => {
    const results = getResults()
    fs.writeFileSync(outFile, JSON.stringify(results, null, 2) + '\n')
    if (onlyId) console.log(`result: ${JSON.stringify(results[onlyId])}`)
  })
  .catch(err => {
    console.error(`client: ${err && err.stack ? err.stack : err}`)
    process.exit(2)
  })
