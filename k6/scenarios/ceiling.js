// ceiling: the same read traffic as `me` (a GET with a bearer header), against a bare Starlette endpoint that
// returns a constant under the same uvicorn settings (k6/ceilings.py): the most any read route could do here.
//   VUS (32), WARMUP (5s), DURATION   as in me.js
import { DURATION, int, me, ok, options as common, seconds, summary } from './lib.js';

const WARMUP = __ENV.WARMUP || '5s';
const TOKEN = 'x'.repeat(300); // about the length of a real access token, so requests weigh the same

export const options = common(
  {
    warmup: { executor: 'constant-vus', vus: int('VUS', 32), duration: WARMUP, gracefulStop: '0s' },
    ceiling: { executor: 'constant-vus', vus: int('VUS', 32), duration: DURATION, startTime: `${seconds(WARMUP)}s` },
  },
  { 'http_req_failed{scenario:ceiling}': ['rate<0.01'] },
);

export default function () {
  ok(me(TOKEN, `${__ENV.BASE_URL}/`), 200, 'constant');
}

export const handleSummary = summary;
