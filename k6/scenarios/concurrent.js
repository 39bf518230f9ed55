// concurrent: the seed's bursts. REGISTRATIONS clients register at the same instant, then LOGINS clients log in at
// the same instant, each once. Every one must be answered: 201/200 within the bound (the runner judges the
// latency), or 503 with Retry-After; none may time out or go unanswered within WINDOW.
//   REGISTRATIONS (100)  clients registering at once (new accounts, unique per run)
//   LOGINS (1000)        clients logging in at once (random seeded users)
//   WINDOW (15s)         each burst's time limit: a request still open then counts as unanswered
import http from 'k6/http';
import exec from 'k6/execution';
import { Counter } from 'k6/metrics';
import { RUN_ID, int, login, options as common, randomUser, register, seconds, summary } from './lib.js';

const WINDOW = __ENV.WINDOW || '15s';
const missingRetryAfter = new Counter('missing_retry_after'); // a 503 that does not say when to come back

function burst(execName, vus, startTime) {
  return {
    executor: 'per-vu-iterations', exec: execName, vus, iterations: 1, startTime, maxDuration: WINDOW,
    gracefulStop: '0s', // the window is the limit: what is still open then is unanswered, not waited for
  };
}

export const options = common(
  {
    registrations: burst('signUp', int('REGISTRATIONS', 100), '0s'),
    logins: burst('signIn', int('LOGINS', 1000), `${seconds(WINDOW) + 1}s`),
  },
  {
    'http_req_failed{scenario:registrations}': ['rate==0'], // 201 and 503 are both answers here
    'http_req_failed{scenario:logins}': ['rate==0'], // 200 and 503
    missing_retry_after: ['count==0'],
  },
);

function answered(response) {
  if (response.status === 503 && !response.headers['Retry-After']) missingRetryAfter.add(1);
}

export function signUp() {
  // unique across VUs and runs; at most 50 characters
  const username = `${RUN_ID}c${exec.vu.idInTest}`;
  const response = register(username);
  answered(response);
}

export function signIn() {
  answered(login(randomUser(), { responseCallback: http.expectedStatuses(200, 503) }));
}

export const handleSummary = summary;
