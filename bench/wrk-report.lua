-- wrk script for bench/compare.sh: prints the run as one line of key=value pairs, the same keys
-- bench/loadgen prints (latency in ms, MB/s in 10^6 bytes of responses, heads included, per s).
done = function(summary, latency, requests)
   local secs = summary.duration / 1e6
   local e = summary.errors
   io.write(string.format(
      "requests=%d seconds=%.3f rps=%.1f bytes=%d mbps=%.2f p50_ms=%.3f p99_ms=%.3f " ..
      "p999_ms=%.3f sother=%d errors=%d\n",
      summary.requests, secs, summary.requests / secs, summary.bytes,
      summary.bytes / secs / 1e6, latency:percentile(50) / 1000, latency:percentile(99) / 1000,
      latency:percentile(99.9) / 1000, e.status, e.connect + e.read + e.write + e.timeout))
end
