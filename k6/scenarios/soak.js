// soak: steady mixed load for a long time while the runner samples memory (target: RSS grows < 10% after warm-up).
//   LOGIN_RATE (2)     logins per second (the runner sets a quarter of the measured bcrypt rate)
//   READ_RATE (100)    authenticated reads per second
//   REFRESH_RATE (10)  rotations per second, on REFRESH_VUS chains
//   REFRESH_VUS (4)    sessions rotating; each starts with one login
//   TOKENS (20)        sessions the reads spread over
//   DURATION           the soak (the runner's --soak-duration)
import http from 'k6/http';
import { sleep } from 'k6';
import { DURATION, int, login, me, ok, options as common, randomUser, refresh, summary, tokenPairs } from './lib.js';

const MAX_VUS = int('MAX_VUS', 300); // enough that k6 really offers the arrival rates

const REFRESH_VUS = int('REFRESH_VUS', 4);
const PACE = REFRESH_VUS / int('REFRESH_RATE', 10); // seconds between one chain's rotations

function steady(exec, rate) {
  return {
    executor: 'constant-arrival-rate', exec, rate, timeUnit: '1s', duration: DURATION,
    preAllocatedVUs: Math.min(MAX_VUS, Math.max(10, Math.ceil(rate / 4))), maxVUs: MAX_VUS,
  };
}

export const options = common(
  {
    soak_logins: steady('signIn', int('LOGIN_RATE', 2)),
    soak_reads: steady('read', int('READ_RATE', 100)),
    // closed model: a few long chains (an arrival-rate executor would start a new VU, and so a login, at every
    // hiccup), each paced to its share of REFRESH_RATE
    soak_refresh: { executor: 'constant-vus', exec: 'rotate', vus: REFRESH_VUS, duration: DURATION },
  },
  { http_req_failed: ['rate<0.01'] },
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

let current = null; // this VU's refresh chain

export function rotate() {
  const started = Date.now();
  if (current === null) {
    const response = login(randomUser(), { responseType: 'text' });
    if (ok(response, 200, 'login')) current = response.json('refresh_token');
  } else {
    const response = refresh(current);
    current = ok(response, 200, 'rotation') ? response.json('refresh_token') : null;
  }
  sleep(Math.max(0, PACE - (Date.now() - started) / 1000));
}

export const handleSummary = summary;
