// The http-cache-tests origin server, bound to 127.0.0.1 only.
//
// The suite's own server/server.mjs listens on every interface and writes a PID file into its
// working directory; this starts the same request handlers on the loopback address instead.
//
//   node origin.mjs [PORT]     PORT 0 (the default) picks a free one
//
// Once listening it prints one line, "listening 127.0.0.1:PORT", on stdout.

import http from 'http'
import process from 'process'

import handleConfig from 'http-cache-tests/server/handle-config.mjs'
import handleState from 'http-cache-tests/server/handle-state.mjs'
import handleTest from 'http-cache-tests/server/handle-test.mjs'

const host = '127.0.0.1'
const port = parseInt(process.argv[2] || '0', 10)
let baseUrl = `http://${host}:${port}/`

function notFound (response, what) {
  response.writeHead(404, { 'Content-Type': 'text/plain' })
  response.end(`${what} Not Found\n`)
}

function handleMain (request, response) {
  let url
  try {
    url = new URL(request.url, baseUrl)
  } catch {
    return notFound(response, 'bad URL')
  }
  const pathSegs = url.pathname.split('/')
  pathSegs.shift()
  const dispatch = pathSegs.shift()
  if (dispatch === 'config') {
    handleConfig(pathSegs, request, response)
  } else if (dispatch === 'test') {
    handleTest(pathSegs, request, response)
  } else if (dispatch === 'state') {
    handleState(pathSegs, request, response)
  } else {
    // The suite's server would serve its own files here; the cache tests never ask for them.
    notFound(response, url.pathname)
  }
}

const server = http.createServer(handleMain)
server.on('error', err => {
  console.error(`origin: ${err.message}`)
  process.exit(1)
})
server.listen(port, host, () => {
  const addr = server.address()
  baseUrl = `http://${host}:${addr.port}/`
  console.log(`listening ${host}:${addr.port}`)
})

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => process.exit(0))
}
