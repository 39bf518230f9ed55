// Shared by every scenario: parameters, the auth calls, options and the summary file.
//
// Parameters come from k6's environment (`k6 run -e NAME=value`, which k6/run passes): each scenario lists its own
// at the top. Common ones:
//   BASE_URL      the service, e.g. http://127.0.0.1:8000 (loopback only: the runner never sends traffic elsewhere)
//   USERS         how many seeded users exist: bench0 … bench{USERS-1}, all with PASSWORD
//   PASSWORD      the seeded users' password (default bench-password)
//   RUN_ID        short unique id of this run, so register never collides with an earlier run's names
//   DURATION      length of the measured phase (k6 duration, e.g. 30s)
//   SUMMARY_JSON  where handleSummary writes k6's end-of-test summary (the runner reads it)
import http from 'k6/http';
import { check, fail, sleep } from 'k6';
import { Counter } from 'k6/metrics';

export const BASE = __ENV.BASE_URL || 'http://127.0.0.1:8000';
export const USERS = int('USERS', 10000);
export const PASSWORD = __ENV.PASSWORD || 'bench-password';
export const RUN_ID = __ENV.RUN_ID || `r${Date.now().toString(36)}`;
export const DURATION = __ENV.DURATION || '30s';
export const TIMEOUT = __ENV.TIMEOUT || '30s'; // a request slower than this counts as a timeout (status 0)

export const AUTH = `${BASE}/api/v1/auth`;
export const MAX_BACKOFF = int('MAX_BACKOFF', 2); // seconds: the longest a client honours Retry-After here

// 503 + Retry-After: the service's admission control refusing a hash it could not start within its wait budget
const shed = new Counter('shed');
const JSON_HEADERS = { 'Content-Type': 'application/json' };

export function int(name, fallback) {
  const raw = __ENV[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value)) fail(`${name} must be a number, got ${raw}`);
  return value;
}

// k6 durations ("30s", "2m", "1m30s", "500ms") in seconds, for computing start times of later phases.
export function seconds(duration) {
  let total = 0;
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h)/g;
  let match;
  let matched = '';
  while ((match = re.exec(duration)) !== null) {
    total += Number(match[1]) * { ms: 0.001, s: 1, m: 60, h: 3600 }[match[2]];
    matched += match[0];
  }
  if (matched !== duration) fail(`not a duration: ${duration}`);
  return total;
}

export function randomUser() {
  return `bench${Math.floor(Math.random() * USERS)}`;
}

// Options every scenario shares. Response bodies are dropped unless a request asks for them (responseType: 'text'):
// the load generator shares the CPUs with the service, and parsing bodies nobody reads would steal from it.
export function options(scenarios, thresholds) {
  return {
    scenarios,
    thresholds,
    discardResponseBodies: true,
    setupTimeout: __ENV.SETUP_TIMEOUT || '120s',
    // few tags: fewer columns in the CSV the runner parses (and no full URLs)
    systemTags: ['status', 'method', 'name', 'scenario', 'expected_response', 'error_code'],
    summaryTrendStats: ['avg', 'min', 'med', 'p(95)', 'p(99)', 'max', 'count'],
    userAgent: 'authsvc-bench/k6',
  };
}

export function login(username, extra = {}) {
  return http.post(
    `${AUTH}/token`,
    { username, password: PASSWORD },
    { tags: { name: 'login' }, timeout: TIMEOUT, ...extra },
  );
}

export function register(username) {
  const body = JSON.stringify({ username, email: `${username}@example.com`, password: PASSWORD });
  return http.post(`${AUTH}/register`, body, {
    headers: JSON_HEADERS, tags: { name: 'register' }, timeout: TIMEOUT,
    responseCallback: http.expectedStatuses(201, 503),
  });
}

export function me(accessToken, url = `${AUTH}/me`) {
  return http.get(url, {
    headers: { Authorization: `Bearer ${accessToken}` }, tags: { name: 'me' }, timeout: TIMEOUT,
  });
}

export function refresh(refreshToken, extra = {}) {
  return http.post(`${AUTH}/refresh`, JSON.stringify({ refresh_token: refreshToken }), {
    headers: JSON_HEADERS, tags: { name: 'refresh' }, timeout: TIMEOUT, responseType: 'text', ...extra,
  });
}

// What a well-behaved client does with a 503: wait as long as Retry-After says (capped, jittered so the waiting
// clients do not all come back at once), then try again. Returns true when the response was such a refusal.
export function backedOff(response) {
  if (response.status !== 503) return false;
  shed.add(1);
  const retryAfter = Number(response.headers['Retry-After']) || 1;
  sleep(Math.min(retryAfter, MAX_BACKOFF) * (0.5 + Math.random() / 2));
  return true;
}

// Token pairs for `count` distinct seeded users, logged in `parallel` at a time (each login costs one bcrypt).
export function tokenPairs(count, parallel = 8) {
  const pairs = [];
  for (let start = 0; start < count; start += parallel) {
    const batch = [];
    for (let i = start; i < Math.min(count, start + parallel); i++) {
      batch.push({
        method: 'POST',
        url: `${AUTH}/token`,
        body: { username: `bench${i % USERS}`, password: PASSWORD },
        params: { tags: { name: 'setup_login' }, responseType: 'text', timeout: TIMEOUT },
      });
    }
    for (let [index, response] of http.batch(batch).entries()) {
      for (let attempt = 1; backedOff(response) && attempt < 20; attempt++) {
        response = http.request(batch[index].method, batch[index].url, batch[index].body, batch[index].params);
      }
      if (response.status !== 200) fail(`setup login failed: ${response.status} ${response.body}`);
      pairs.push({ access: response.json('access_token'), refresh: response.json('refresh_token') });
    }
  }
  return pairs;
}

export function ok(response, status, what) {
  return check(response, { [`${what} is ${status}`]: (r) => r.status === status });
}

// The summary goes to a file for the runner; stdout gets one line per threshold.
export function summary(data) {
  const lines = [];
  for (const [metric, values] of Object.entries(data.metrics)) {
    for (const [expression, result] of Object.entries(values.thresholds || {})) {
      lines.push(`  ${result.ok ? 'ok  ' : 'FAIL'} ${metric}: ${expression}`);
    }
  }
  const out = { stdout: `thresholds:\n${lines.join('\n')}\n` };
  if (__ENV.SUMMARY_JSON) out[__ENV.SUMMARY_JSON] = JSON.stringify(data);
  return out;
}
