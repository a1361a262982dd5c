'use strict';
// Many requests at once, cold and warm, mixed with streams: every answer is
// right and the daemon stays healthy (its stop() checks for a clean exit and
// no sanitizer report).
const test = require('node:test');
const assert = require('node:assert/strict');
const h = require('../lib/harness');

test('parallel GETs of the same and of different ids, cold and warm, with streams', async () => {
	await h.withStack({ upstream: { streamDelayMs: 2 } }, async ({ up, px }) => {
		const ids = Array.from({ length: 8 }, (_, i) => up.seed({ input: `parallel ${i}` }));
		const expected = new Map(ids.map((id) => [id, up.responseObject(up.get(id))]));

		for (let round = 0; round < 3; round++) {
			const jobs = [];
			for (let k = 0; k < 40; k++) {
				const id = ids[k % ids.length];
				jobs.push(h.request(`${px.url}/v1/responses/${id}`).then((r) => {
					assert.equal(r.status, 200, `${id}: ${r.status} ${r.body.slice(0, 200)}`);
					assert.deepEqual(r.json(), expected.get(id), `body of ${id}`);
					assert.ok(['HIT', 'MISS'].includes(r.headers['x-cache']));
				}));
			}
			for (let k = 0; k < 4; k++) {
				jobs.push(h.openSSE(`${px.url}/v1/responses`, {
					method: 'POST', body: { model: 'gpt-4o', input: `s${round}.${k}`, stream: true },
				}).then(async (s) => {
					const { events } = await s.done;
					assert.equal(events[events.length - 1].event, 'response.completed');
				}));
			}
			await Promise.all(jobs);
		}
		// Everything is warm now.
		for (const id of ids) {
			h.assertXCache(await h.request(`${px.url}/v1/responses/${id}`), 'HIT', id);
		}
		assert.ok(up.count('GET') <= 3 * 40, 'sanity');
	});
});
