'use strict';
// A full cache evicts old entries instead of failing requests.
const test = require('node:test');
const assert = require('node:assert/strict');
const h = require('../lib/harness');

test('with max_size = 64 KiB, 100 responses of ~3 KB are all served; old ones are evicted', async () => {
	await h.withStack({ proxy: { config: '[cache]\nmax_size = 65536\n' } }, async ({ up, px }) => {
		const ids = [];
		for (let i = 0; i < 100; i++) {
			const c = await h.request(`${px.url}/v1/responses`, {
				method: 'POST', body: { model: 'gpt-4o', input: `question number ${i}` },
			});
			assert.equal(c.status, 200, `create #${i}: ${c.status} ${c.body.slice(0, 200)}`);
			assert.ok(c.body.length > 2500);
			const id = c.json().id;
			ids.push(id);
			const g = await h.request(`${px.url}/v1/responses/${id}`);
			assert.equal(g.status, 200, `GET #${i}: ${g.status} ${g.body.slice(0, 200)}`);
			assert.equal(g.json().id, id);
		}

		// The newest entries are still there.
		for (const id of ids.slice(-2)) {
			const g = await h.request(`${px.url}/v1/responses/${id}`);
			assert.equal(g.status, 200);
			h.assertXCache(g, 'HIT', `recent ${id}`);
		}

		// The oldest have been evicted (but are still answered, from upstream).
		const results = [];
		for (const id of ids.slice(0, 10)) {
			const g = await h.request(`${px.url}/v1/responses/${id}`);
			assert.equal(g.status, 200, `old ${id}: ${g.status} ${g.body.slice(0, 200)}`);
			assert.equal(g.json().id, id);
			results.push(g.headers['x-cache']);
		}
		assert.ok(results.includes('MISS'), `some of the 10 oldest were evicted: ${results.join(',')}`);
	});
});
