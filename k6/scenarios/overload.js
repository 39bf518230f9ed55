// overload: logins arriving at several times the hash capacity. Admission control must answer the excess with
// 503 + Retry-After at once, while the admitted logins keep a bounded latency.
//   RATE (40)          logins per second offered (the runner sets OVERLOAD_FACTOR x the measured bcrypt rate)
//   MAX_VUS (600)      enough concurrent clients that k6 really offers RATE even when responses slow down
//   DURATION
// Targets (the runner judges them): admitted p99 < 2 s, 503s answered within 50 ms, no timeouts, no other 5xx.
import http from 'k6/http';
import { Counter, Trend } from 'k6/metrics';
import { DURATION, int, login, options as common, randomUser, summary } from './lib.js';

const MAX_VUS = int('MAX_VUS', 600);
const RATE = int('RATE', 40);
const admitted = new Trend('admitted_duration', true);
const shed = new Trend('shed_duration', true);
const timeouts = new Counter('timeouts');
const serverErrors = new Counter('server_errors'); // 5xx other than 503
const unexpected = new Counter('unexpected_status');
const missingRetryAfter = new Counter('missing_retry_after'); // a 503 that does not say when to come back

export const options = common(
  {
    overload: {
      executor: 'constant-arrival-rate', rate: RATE, timeUnit: '1s', duration: DURATION,
      preAllocatedVUs: Math.min(MAX_VUS, RATE * 2), maxVUs: MAX_VUS,
    },
  },
  {
    timeouts: ['count==0'],
    server_errors: ['count==0'],
    unexpected_status: ['count==0'],
    missing_retry_after: ['count==0'],
    'http_req_failed{scenario:overload}': ['rate==0'], // 200 and 503 are both expected answers here
  },
);

http.setResponseCallback(http.expectedStatuses(200, 503));

export default function () {
  const response = login(randomUser());
  if (response.status === 200) {
    admitted.add(response.timings.duration);
  } else if (response.status === 503) {
    shed.add(response.timings.duration);
    if (!response.headers['Retry-After']) missingRetryAfter.add(1);
  } else if (response.status === 0) timeouts.add(1);
  else if (response.status >= 500) serverErrors.add(1);
  else unexpected.add(1);
}

export const handleSummary = summary;
