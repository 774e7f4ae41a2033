// Summarizes an http-cache-tests results file and checks it against the required-failure baseline.
//
//   node summarize.mjs RESULTS.json BASELINE.txt
//
// Each test gets the class the suite's own result pages give it (lib/display.mjs,
// determineTestResult):
//   pass             the test passed (a required or an optimal test)
//   fail             a required test failed: a conformance problem
//   optional_fail    an optimal test failed: the cache could have done better, not a violation
//   yes / no         a check (informational) test, answered yes or no
//   setup_fail       the harness could not set the test up (e.g. the cache refused the PUT)
//   harness_fail     the harness recorded no outcome at all
//   retry            the cache sent the same request to the origin twice
//   dependency_fail  a test it depends on did not pass, so it was not judged
//   untested         no result (not in the shared-cache set)
//
// A required failure is a required-kind test whose class is fail, setup_fail, harness_fail or
// retry: each of those means its requirement was not shown to hold. The baseline lists the
// required failures that are known and accepted (one id a line, '#' starts a comment). Exit
// status: 0 when every required failure is in the baseline, 1 when one is not, 2 when the results
// cannot be read. The last line printed is always "conformance: N passed, M failed", N being the
// tests that passed (required and optimal) and M the required failures, baselined or not.

import fs from 'fs'
import process from 'process'

import { sharedSuites, testById, kindOf } from './tests.mjs'

const args = process.argv.slice(2)
const writeBaseline = args.includes('--write-baseline')
const [resultsFile, baselineFile] = args.filter(a => a !== '--write-baseline')
if (!resultsFile || !baselineFile) {
  console.error('usage: node summarize.mjs RESULTS.json BASELINE.txt [--write-baseline]')
  process.exit(2)
}

function bail (message) {
  console.log(`conformance: ERROR: ${message}`)
  console.log('conformance: 0 passed, 0 failed')
  process.exit(2)
}

let results
try {
  results = JSON.parse(fs.readFileSync(resultsFile, 'utf8'))
} catch (err) {
  bail(`cannot read results ${resultsFile}: ${err.message}`)
}
if (results === null || typeof results !== 'object' || Object.keys(results).length === 0) {
  bail(`no test results in ${resultsFile}`)
}

let baseline = []
try {
  baseline = fs.readFileSync(baselineFile, 'utf8')
    .split('\n')
    .map(line => line.replace(/#.*/, '').trim())
    .filter(line => line !== '')
} catch (err) {
  if (err.code !== 'ENOENT') bail(`cannot read baseline ${baselineFile}: ${err.message}`)
}
const baselineSet = new Set(baseline)

const PASSING = new Set(['pass', 'yes'])
const classes = new Map()

function classify (id) {
  if (classes.has(id)) return classes.get(id)
  classes.set(id, 'untested') // guards against dependency cycles
  const test = testById.get(id)
  const result = results[id]
  let cls
  if (test === undefined || result === undefined) {
    cls = 'untested'
  } else if ((test.depends_on || []).some(dep => !PASSING.has(classify(dep)))) {
    cls = 'dependency_fail'
  } else if (Array.isArray(result) && result[0] === 'Setup') {
    cls = result[1] === 'retry' ? 'retry' : 'setup_fail'
  } else if (result === false) {
    cls = 'harness_fail'
  } else {
    const kind = kindOf(test)
    if (kind === 'check') cls = result === true ? 'yes' : 'no'
    else if (kind === 'optimal') cls = result === true ? 'pass' : 'optional_fail'
    else cls = result === true ? 'pass' : 'fail'
  }
  classes.set(id, cls)
  return cls
}

const REQUIRED_FAIL = new Set(['fail', 'setup_fail', 'harness_fail', 'retry'])
const ORDER = ['pass', 'fail', 'optional_fail', 'yes', 'no', 'setup_fail', 'harness_fail', 'retry',
  'dependency_fail', 'untested']
const LISTED = new Set(['fail', 'optional_fail', 'setup_fail', 'harness_fail', 'retry'])
const verbose = !['', '0', undefined].includes(process.env.CONFORMANCE_VERBOSE)

const counts = Object.fromEntries(ORDER.map(c => [c, 0]))
const requiredCounts = Object.fromEntries(ORDER.map(c => [c, 0]))
const kinds = { required: 0, optimal: 0, check: 0 }
const listed = []
const requiredFailures = []
let total = 0
for (const suite of sharedSuites) {
  for (const test of suite.tests) {
    total++
    const cls = classify(test.id)
    const kind = kindOf(test)
    counts[cls]++
    kinds[kind] = (kinds[kind] || 0) + 1
    if (kind === 'required') requiredCounts[cls]++
    if (LISTED.has(cls) || (verbose && cls === 'dependency_fail')) listed.push({ id: test.id, kind, cls })
    if (kind === 'required' && REQUIRED_FAIL.has(cls)) requiredFailures.push(test.id)
  }
}
const unknownResults = Object.keys(results).filter(id => !testById.has(id))

if (writeBaseline) {
  const lines = [
    '# Required http-cache-tests failures accepted for cdnode: one test id a line, \'#\' starts a comment.',
    '# tests/conformance/run.sh fails when a required test fails that is not listed here. Remove an',
    '# entry once its test passes; regenerate with CONFORMANCE_UPDATE_BASELINE=1 (see README.md).',
    `# Written from a run of ${total} shared-cache tests: ${counts.pass} passed, ${requiredFailures.length} required failures.`,
    ...requiredFailures.map(id => `${id.padEnd(56)} # ${classify(id)}`)
  ]
  fs.writeFileSync(baselineFile, lines.join('\n') + '\n')
  console.log(`conformance: wrote ${requiredFailures.length} entries to ${baselineFile}`)
  baseline = requiredFailures.slice()
  baselineSet.clear()
  for (const id of baseline) baselineSet.add(id)
}

function detail (id, cls) {
  if (cls === 'dependency_fail') {
    const deps = (testById.get(id).depends_on || []).filter(dep => !PASSING.has(classify(dep)))
    return `depends on ${deps.join(', ')}`
  }
  const r = results[id]
  return Array.isArray(r) ? `${r[0]}: ${r[1]}` : ''
}

function countList (table, names) {
  return names.filter(c => table[c] > 0).map(c => `${c} ${table[c]}`).join(', ') || 'none'
}

console.log(`conformance: ${total} shared-cache tests (${Object.entries(kinds).map(([k, n]) => `${k} ${n}`).join(', ')}), ` +
  `${Object.keys(results).length} results`)
console.log(`conformance: all tests: ${countList(counts, ORDER)}`)
console.log(`conformance: required tests: ${countList(requiredCounts, ORDER)}`)
console.log(`conformance: optimal tests failed (optional_fail): ${counts.optional_fail}; ` +
  `check tests answered yes ${counts.yes}, no ${counts.no}`)
if (listed.length) {
  console.log('conformance: tests not passing (class, kind, id, detail):')
  for (const t of listed) {
    const mark = baselineSet.has(t.id) ? ' [baseline]' : ''
    console.log(`  ${t.cls.padEnd(15)} ${t.kind.padEnd(8)} ${t.id}${mark}  ${detail(t.id, t.cls)}`.trimEnd())
  }
  if (!verbose && counts.dependency_fail) {
    console.log(`  (${counts.dependency_fail} dependency_fail tests not listed; CONFORMANCE_VERBOSE=1 lists them)`)
  }
}
if (unknownResults.length) {
  console.log(`conformance: results for ids the suite does not define: ${unknownResults.join(' ')}`)
}

const failureSet = new Set(requiredFailures)
const newFailures = requiredFailures.filter(id => !baselineSet.has(id))
const fixed = baseline.filter(id => !failureSet.has(id))
if (fixed.length) {
  console.log(`conformance: ${fixed.length} baseline entr${fixed.length === 1 ? 'y' : 'ies'} no longer failing; remove ${fixed.length === 1 ? 'it' : 'them'} from ${baselineFile}:`)
  for (const id of fixed) {
    const why = testById.has(id) ? classify(id) : 'not a test id in this suite version'
    console.log(`  ${id}  (${why})`)
  }
}
if (newFailures.length) {
  console.log(`conformance: ${newFailures.length} required failure${newFailures.length === 1 ? '' : 's'} not in the baseline:`)
  for (const id of newFailures) console.log(`  ${classify(id).padEnd(15)} ${id}  ${detail(id, classify(id))}`.trimEnd())
} else {
  console.log(`conformance: every required failure is in the baseline (${baseline.length} entries)`)
}
console.log('conformance: "failed" counts required tests whose class is fail, setup_fail, harness_fail or retry')
console.log(`conformance: ${counts.pass} passed, ${requiredFailures.length} failed`)
process.exit(newFailures.length ? 1 : 0)
