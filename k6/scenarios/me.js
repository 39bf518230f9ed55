// me: authenticated reads with a warm cache: a short warm-up, then the measured phase.
//   VUS (32)      concurrent clients (closed model: finds the saturation throughput)
//   TOKENS (20)   distinct sessions the reads spread over (logged in during setup)
//   WARMUP (5s)   unmeasured phase that fills caches and connection pools
//   DURATION      measured phase
import { DURATION, int, me, ok, options as common, seconds, summary, tokenPairs } from './lib.js';

const WARMUP = __ENV.WARMUP || '5s';

export const options = common(
  {
    warmup: { executor: 'constant-vus', vus: int('VUS', 32), duration: WARMUP, gracefulStop: '0s' },
    me: { executor: 'constant-vus', vus: int('VUS', 32), duration: DURATION, startTime: `${seconds(WARMUP)}s` },
  },
  { 'http_req_failed{scenario:me}': ['rate<0.01'], 'http_req_failed{scenario:warmup}': ['rate<0.01'] },
);

export function setup() {
  return { tokens: tokenPairs(int('TOKENS', 20)).map((pair) => pair.access) };
}

export default function (data) {
  ok(me(data.tokens[Math.floor(Math.random() * data.tokens.length)]), 200, 'me');
}

export const handleSummary = summary;
