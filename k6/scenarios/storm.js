// storm: a retry storm. VUS clients log in back to back with no think time and ignore Retry-After (naive clients,
// or clients that retry at once): what admission control answers with 503 comes straight back. Target 0 (issue 16):
// logins done per second stay near the raw bcrypt ceiling, the admitted ones fast, every refusal fast.
//   VUS (200)   concurrent clients, all starting at once
//   DURATION    measured phase
import http from 'k6/http';
import { Counter } from 'k6/metrics';
import { DURATION, int, login, options as common, randomUser, summary } from './lib.js';

const missingRetryAfter = new Counter('missing_retry_after'); // a 503 that does not say when to come back
const timeouts = new Counter('timeouts');
const serverErrors = new Counter('server_errors'); // 5xx other than 503
const unexpected = new Counter('unexpected_status');

export const options = common(
  { storm: { executor: 'constant-vus', vus: int('VUS', 200), duration: DURATION } },
  {
    timeouts: ['count==0'],
    server_errors: ['count==0'],
    unexpected_status: ['count==0'],
    missing_retry_after: ['count==0'],
    'http_req_failed{scenario:storm}': ['rate==0'], // 200 and 503 are both expected answers here
  },
);

http.setResponseCallback(http.expectedStatuses(200, 503));

export default function () {
  const response = login(randomUser());
  if (response.status === 503) {
    if (!response.headers['Retry-After']) missingRetryAfter.add(1); // and at once again: no wait, no backoff
  } else if (response.status === 0) timeouts.add(1);
  else if (response.status >= 500) serverErrors.add(1);
  else if (response.status !== 200) unexpected.add(1);
}

export const handleSummary = summary;
