// latency: service time without queueing, at a light constant arrival rate: logins, then authenticated reads.
// The runner runs it before and after growing the users table (--scale-users), so the two p50s differ only by
// the table size, not by how deep a saturated queue happened to be.
//   LOGIN_RATE (1)    logins per second (the runner sets a fifth of the bcrypt ceiling)
//   READ_RATE (50)    authenticated reads per second (the runner sets a tenth of the measured `me` rate)
//   TOKENS (20)       sessions the reads spread over
//   DURATION          length of each phase
import http from 'k6/http';
import { DURATION, int, login, me, ok, options as common, randomUser, seconds, summary, tokenPairs } from './lib.js';

const MAX_VUS = int('MAX_VUS', 200); // enough that k6 really offers the arrival rates

function steady(exec, rate, startTime) {
  return {
    executor: 'constant-arrival-rate', exec, rate, timeUnit: '1s', duration: DURATION, startTime,
    preAllocatedVUs: Math.min(MAX_VUS, Math.max(10, Math.ceil(rate / 2))), maxVUs: MAX_VUS,
  };
}

export const options = common(
  {
    probe_logins: steady('signIn', int('LOGIN_RATE', 1), '0s'),
    probe_reads: steady('read', int('READ_RATE', 50), `${seconds(DURATION) + 2}s`),
  },
  { 'http_req_failed{scenario:probe_logins}': ['rate<0.01'], 'http_req_failed{scenario:probe_reads}': ['rate<0.01'] },
);

http.setResponseCallback(http.expectedStatuses(200));

export function setup() {
  return { tokens: tokenPairs(int('TOKENS', 20)).map((pair) => pair.access) };
}

export function signIn() {
  ok(login(randomUser()), 200, 'login');
}

export function read(data) {
  ok(me(data.tokens[Math.floor(Math.random() * data.tokens.length)]), 200, 'me');
}

export const handleSummary = summary;
