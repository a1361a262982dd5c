'use strict';
// queued / in_progress responses are never cached: every poll goes upstream
// until the response is final; then one MISS, then HITs.
const test = require('node:test');
const assert = require('node:assert/strict');
const h = require('../lib/harness');

test('a background response is polled upstream until final, then cached', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const c = await h.request(px.url + '/v1/responses', {
			method: 'POST', body: { model: 'gpt-4o', input: 'long job', background: true },
		});
		assert.equal(c.status, 200, c.body);
		h.assertXCache(c, 'BYPASS', 'background create');
		const id = c.json().id;
		assert.equal(c.json().status, 'queued');
		const p = `/v1/responses/${id}`;

		for (let i = 1; i <= 3; i++) {
			const g = await h.request(px.url + p);
			assert.equal(g.status, 200, g.body);
			assert.equal(g.json().status, 'in_progress');
			h.assertXCache(g, 'MISS', `poll #${i}`);
			assert.equal(up.count('GET', p), i, `upstream GET count after poll #${i}`);
		}

		up.finish(id);
		const f1 = await h.request(px.url + p);
		assert.equal(f1.status, 200);
		assert.equal(f1.json().status, 'completed');
		h.assertXCache(f1, 'MISS', 'first GET after completion');
		assert.equal(up.count('GET', p), 4);

		const f2 = await h.request(px.url + p);
		assert.equal(f2.status, 200);
		h.assertXCache(f2, 'HIT', 'second GET after completion');
		assert.equal(f2.body, f1.body);
		assert.equal(up.count('GET', p), 4, 'the hit did not reach the upstream');
	});
});

test('a failed (terminal) response is cached too', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const id = up.seed({ background: true });
		const p = `/v1/responses/${id}`;
		const g0 = await h.request(px.url + p);
		assert.equal(g0.json().status, 'in_progress');
		up.finish(id, 'failed');
		const g1 = await h.request(px.url + p);
		assert.equal(g1.json().status, 'failed');
		h.assertXCache(g1, 'MISS', 'first GET of the failed response');
		const g2 = await h.request(px.url + p);
		h.assertXCache(g2, 'HIT', 'second GET of the failed response');
		assert.equal(up.count('GET', p), 2);
	});
});
