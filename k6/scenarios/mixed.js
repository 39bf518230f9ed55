// mixed: authenticated reads at a constant arrival rate, first alone, then during a login storm of clients that
// honour Retry-After, then during one of clients that do not (a retry storm). Hashing runs in worker threads, so a
// storm must not stall the event loop: the reads' p99 during each storm is compared with their p99 alone, and the
// logins done meanwhile with the bcrypt ceiling (issue 16, target 2: within 2x, no errors, none dropped, ≥ 90%).
//   READ_RATE (100)   reads per second in every phase (the runner sets a fraction of the measured `me` rate)
//   STORM_VUS (32)    clients logging in back to back during the first storm, all starting at once, honouring 503s
//   NAIVE_VUS (200)   clients logging in back to back during the second storm, ignoring 503s (no wait, no backoff)
//   TOKENS (20)       sessions the reads spread over
//   DURATION          length of each phase
import http from 'k6/http';
import {
  DURATION, backedOff, int, login, me, ok, options as common, randomUser, seconds, summary, tokenPairs,
} from './lib.js';

const MAX_VUS = int('MAX_VUS', 400); // enough that k6 really offers the arrival rate
const READ_RATE = int('READ_RATE', 100);
const STORM_AT = `${seconds(DURATION) + 2}s`; // a gap, so the phases' requests never overlap
const NAIVE_AT = `${2 * seconds(DURATION) + 4}s`;

function reads(startTime) {
  return {
    executor: 'constant-arrival-rate', exec: 'read', rate: READ_RATE, timeUnit: '1s', duration: DURATION,
    // enough VUs up front that a stall is measured, not hidden: a VU waiting on a slow read cannot send the next
    // one, and k6 counts such reads as dropped_iterations (the runner reports them with the p99)
    preAllocatedVUs: Math.min(MAX_VUS, Math.max(20, Math.ceil(READ_RATE / 2))), maxVUs: MAX_VUS, startTime,
  };
}

export const options = common(
  {
    reads_alone: reads('0s'),
    storm_reads: reads(STORM_AT),
    storm_logins: {
      executor: 'constant-vus', exec: 'storm', vus: int('STORM_VUS', 32), duration: DURATION, startTime: STORM_AT,
    },
    naive_reads: reads(NAIVE_AT),
    naive_logins: {
      executor: 'constant-vus', exec: 'naive', vus: int('NAIVE_VUS', 200), duration: DURATION, startTime: NAIVE_AT,
    },
  },
  {
    'http_req_failed{scenario:reads_alone}': ['rate==0'],
    'http_req_failed{scenario:storm_reads}': ['rate==0'],
    'http_req_failed{scenario:storm_logins}': ['rate<0.01'],
    'http_req_failed{scenario:naive_reads}': ['rate==0'],
    'http_req_failed{scenario:naive_logins}': ['rate<0.01'],
  },
);

http.setResponseCallback(http.expectedStatuses(200));

export function setup() {
  return { tokens: tokenPairs(int('TOKENS', 20)).map((pair) => pair.access) };
}

export function read(data) {
  ok(me(data.tokens[Math.floor(Math.random() * data.tokens.length)]), 200, 'me');
}

export function storm() {
  const response = login(randomUser(), { responseCallback: http.expectedStatuses(200, 503) });
  if (!backedOff(response)) ok(response, 200, 'login');
}

export function naive() {
  const response = login(randomUser(), { responseCallback: http.expectedStatuses(200, 503) });
  if (response.status !== 503) ok(response, 200, 'login'); // and at once again: no Retry-After, no think time
}

export const handleSummary = summary;
