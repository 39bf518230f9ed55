// login: password grants for random seeded users (one bcrypt verify each). Clients honour 503 + Retry-After
// (admission control); the runner counts 200s only.
//   VUS (32)   concurrent clients: more than the hash threads can take at once, so the pool stays saturated
//   DURATION   measured phase
import http from 'k6/http';
import { DURATION, backedOff, int, login, ok, options as common, randomUser, summary } from './lib.js';

export const options = common(
  { login: { executor: 'constant-vus', vus: int('VUS', 32), duration: DURATION } },
  { 'http_req_failed{scenario:login}': ['rate<0.01'] }, // 200 and 503 (backpressure) are expected
);

http.setResponseCallback(http.expectedStatuses(200, 503));

export default function () {
  const response = login(randomUser());
  if (!backedOff(response)) ok(response, 200, 'login');
}

export const handleSummary = summary;
