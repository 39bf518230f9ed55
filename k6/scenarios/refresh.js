// refresh: rotation chains under load, then bursts of concurrent refreshes of one token.
//   VUS (16)            chains rotating at once, each VU one session: refresh, keep the new token, repeat
//   DURATION            length of the chains phase
//   BURSTS (5)          rounds; each round fires BURST_VUS refreshes of one fresh token at the same instant
//   BURST_VUS (20)      exactly one of them must get 200 (the atomic rotation); the others 401 (reuse)
//   BURST_GAP_MS (500)  time between rounds
import http from 'k6/http';
import exec from 'k6/execution';
import { sleep } from 'k6';
import { Counter } from 'k6/metrics';
import {
  DURATION, int, login, ok, options as common, randomUser, refresh, seconds, summary, tokenPairs,
} from './lib.js';

const VUS = int('VUS', 16);
const BURSTS = int('BURSTS', 5);
const BURST_VUS = int('BURST_VUS', 20);
const GAP_MS = int('BURST_GAP_MS', 500);

const rotations = new Counter('rotations');
const burstWins = new Counter('burst_wins');
const burstUnexpected = new Counter('burst_unexpected');

export const options = common(
  {
    chains: { executor: 'constant-vus', vus: VUS, duration: DURATION, exec: 'chain' },
    burst: {
      executor: 'per-vu-iterations', vus: BURST_VUS, iterations: BURSTS, exec: 'burst',
      startTime: `${seconds(DURATION) + 1}s`, maxDuration: `${Math.ceil((BURSTS * GAP_MS) / 1000) + 30}s`,
    },
  },
  {
    'http_req_failed{scenario:chains}': ['rate==0'],
    'http_req_failed{scenario:burst}': ['rate==0'], // 200 or 401 only
    burst_wins: [`count==${BURSTS}`], // exactly one winner per round (the runner checks each round)
    burst_unexpected: ['count==0'],
    rotations: ['count>0'],
  },
);

export function setup() {
  // one session per VU id: VUs never share a chain, so no rotation here ever races another
  const pairs = tokenPairs(Math.max(VUS, BURST_VUS) + BURSTS);
  return {
    chains: pairs.slice(0, Math.max(VUS, BURST_VUS)).map((pair) => pair.refresh),
    bursts: pairs.slice(Math.max(VUS, BURST_VUS)).map((pair) => pair.refresh),
  };
}

let current = null; // this VU's refresh token (module state is per VU)
let begun = false;

export function chain(data) {
  if (!begun) {
    current = data.chains[exec.vu.idInTest - 1];
    begun = true;
  }
  if (current === null) {
    // the chain broke (an error, counted by the threshold): start a new one to keep the load going
    const fresh = login(randomUser(), { responseType: 'text', tags: { name: 'relogin' } });
    if (fresh.status === 200) current = fresh.json('refresh_token');
    return;
  }
  const response = refresh(current);
  if (ok(response, 200, 'rotation')) {
    rotations.add(1);
    current = response.json('refresh_token');
  } else {
    current = null;
  }
}

export function burst(data) {
  const round = exec.vu.iterationInScenario;
  // every VU fires round N at the same instant, so the refreshes really race
  const wait = exec.scenario.startTime + round * GAP_MS - Date.now();
  if (wait > 0) sleep(wait / 1000);
  const tags = { name: 'burst', round: String(round) };
  const response = refresh(data.bursts[round], { tags, responseCallback: http.expectedStatuses(200, 401) });
  if (response.status === 200) burstWins.add(1, tags);
  else if (response.status !== 401) burstUnexpected.add(1, tags);
}

export const handleSummary = summary;
