// The test set run against cdnode: every suite the http-cache-tests command-line client runs
// (tests/index.mjs plus Surrogate-Control), minus the tests marked browser_only, which are about
// private (browser) caches. The suite's runner drops those itself when it is not testing a
// browser cache; they are filtered here too so the summary never counts them.

import index from 'http-cache-tests/tests/index.mjs'
import surrogate from 'http-cache-tests/tests/surrogate-control.mjs'

export const allSuites = [...index, surrogate]

export const sharedSuites = allSuites.map(suite => ({
  ...suite,
  tests: suite.tests.filter(test => test.browser_only !== true)
}))

// id -> test definition, over every suite (dependencies may point anywhere).
export const testById = new Map()
for (const suite of allSuites) {
  for (const test of suite.tests) testById.set(test.id, test)
}

// The kind as the suite defines it: a test without one is required.
export function kindOf (test) {
  return test.kind || 'required'
}
