'use strict';
// cancel invalidates the id, forwards, and may cache the cancelled body; a
// GET afterwards never sees the stale in_progress body.
const test = require('node:test');
const assert = require('node:assert/strict');
const h = require('../lib/harness');

test('cancel of a background response: cancelled, never the stale in_progress body', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const c = await h.request(px.url + '/v1/responses', {
			method: 'POST', body: { model: 'gpt-4o', input: 'slow', background: true },
		});
		assert.equal(c.status, 200, c.body);
		const id = c.json().id;
		const p = `/v1/responses/${id}`;

		const g0 = await h.request(px.url + p);
		assert.equal(g0.json().status, 'in_progress');
		h.assertXCache(g0, 'MISS', 'poll before cancel');

		const x = await h.request(`${px.url}${p}/cancel`, {
			method: 'POST', body: '', headers: { 'content-length': '0' },
		});
		assert.equal(x.status, 200, x.body);
		assert.match(x.headers['content-type'], /^application\/json/);
		assert.equal(x.json().status, 'cancelled');
		assert.equal(x.json().id, id);
		h.assertXCache(x, 'BYPASS', 'cancel');
		assert.equal(up.count('POST', `${p}/cancel`), 1);

		const before = up.count('GET', p);
		const g1 = await h.request(px.url + p);
		assert.equal(g1.status, 200);
		assert.equal(g1.json().status, 'cancelled', 'not the stale in_progress body');
		const g2 = await h.request(px.url + p);
		assert.equal(g2.status, 200);
		assert.equal(g2.json().status, 'cancelled');
		h.assertXCache(g2, 'HIT', 'second GET after cancel');
		assert.ok(up.count('GET', p) - before <= 1, `at most one upstream GET after the cancel (${up.count('GET', p) - before})`);
	});
});

test('cancel of a non-background response passes the upstream 400 through', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const id = up.seed();
		const x = await h.request(`${px.url}/v1/responses/${id}/cancel`, {
			method: 'POST', body: '', headers: { 'content-length': '0' },
		});
		h.assertOpenAIError(x, 400, 'cancel of a synchronous response');
		assert.equal(up.count('POST', `/v1/responses/${id}/cancel`), 1);
		// The response itself is still there and cacheable.
		const g = await h.request(`${px.url}/v1/responses/${id}`);
		assert.equal(g.status, 200);
		assert.equal(g.json().status, 'completed');
	});
});
