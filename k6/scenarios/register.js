// register: new accounts as fast as the service takes them (one bcrypt hash each). Clients honour 503 +
// Retry-After (admission control); the runner counts 201s only.
//   VUS (32)   concurrent clients: more than the hash threads can take at once, so the pool stays saturated
//   DURATION   measured phase
import exec from 'k6/execution';
import { DURATION, RUN_ID, backedOff, int, ok, options as common, register, summary } from './lib.js';

export const options = common(
  { register: { executor: 'constant-vus', vus: int('VUS', 32), duration: DURATION } },
  { 'http_req_failed{scenario:register}': ['rate<0.01'] }, // 201 and 503 (backpressure) are expected
);

export default function () {
  // unique across VUs, iterations and runs; at most 50 characters
  const username = `${RUN_ID}_${exec.vu.idInTest}_${exec.vu.iterationInScenario}`;
  const response = register(username);
  if (!backedOff(response)) ok(response, 201, 'register');
}

export const handleSummary = summary;
