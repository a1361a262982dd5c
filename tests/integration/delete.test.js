'use strict';
// DELETE invalidates every cached entry of the id before it is forwarded: no
// stale hit afterwards, for the response or its input_items pages.
const test = require('node:test');
const assert = require('node:assert/strict');
const h = require('../lib/harness');

test('DELETE forwards, and no cached entry of the id survives it', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const id = up.seed({ input: ['a', 'b', 'c'] });
		const p = `/v1/responses/${id}`;
		const pi = `${p}/input_items`;

		h.assertXCache(await h.request(px.url + p), 'MISS', 'response');
		h.assertXCache(await h.request(px.url + p), 'HIT', 'response again');
		h.assertXCache(await h.request(px.url + pi + '?limit=2'), 'MISS', 'input_items');
		h.assertXCache(await h.request(px.url + pi + '?limit=2'), 'HIT', 'input_items again');
		h.assertXCache(await h.request(px.url + pi), 'MISS', 'input_items default');

		const d = await h.request(px.url + p, { method: 'DELETE' });
		assert.equal(d.status, 200, d.body);
		assert.deepEqual(d.json(), { id, object: 'response.deleted', deleted: true });
		assert.notEqual(d.headers['x-cache'], 'HIT');
		assert.equal(up.count('DELETE', p), 1, 'the DELETE reached the upstream once');

		// A tombstone may answer 404 itself, or the upstream does: either way a
		// 404 in the OpenAI shape and never the old body.
		for (let i = 0; i < 2; i++) {
			const g = await h.request(px.url + p);
			h.assertOpenAIError(g, 404, `GET #${i + 1} after DELETE`);
			assert.notEqual(g.headers['x-cache'], 'HIT', 'not a stale hit');
		}
		for (const q of ['?limit=2', '']) {
			const g = await h.request(px.url + pi + q);
			assert.equal(g.status, 404, `input_items${q} after DELETE: ${g.status} ${g.body.slice(0, 200)}`);
			assert.notEqual(g.headers['x-cache'], 'HIT', `input_items${q}: not a stale hit`);
		}
	});
});

test('DELETE of an unknown id passes the upstream 404 through', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const d = await h.request(`${px.url}/v1/responses/resp_doesnotexist`, { method: 'DELETE' });
		const j = h.assertOpenAIError(d, 404, 'DELETE unknown');
		assert.equal(j.error.message, "Response with id 'resp_doesnotexist' not found.");
		assert.equal(up.count('DELETE', '/v1/responses/resp_doesnotexist'), 1);
	});
});

test('a DELETE that the upstream fails does not leave a stale entry behind', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const id = up.seed();
		const p = `/v1/responses/${id}`;
		const g0 = await h.request(px.url + p);
		h.assertXCache(g0, 'MISS', 'GET');
		up.failNext(500, { error: { message: 'boom', type: 'server_error', param: null, code: null } });
		const d = await h.request(px.url + p, { method: 'DELETE' });
		assert.equal(d.status, 500);
		// Invalidation happens before forwarding, so the next GET goes upstream.
		const g1 = await h.request(px.url + p);
		assert.equal(g1.status, 200);
		assert.notEqual(g1.headers['x-cache'], 'HIT', 'entry was invalidated before the DELETE was forwarded');
		assert.equal(up.count('GET', p), 2);
	});
});
