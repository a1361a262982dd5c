'use strict';
// DELETE invalidates every cached entry of the id before it is forwarded: no
// stale hit afterwards, for the response or its input_items pages; then a
// tombstone answers GETs of the id with 404 without asking the upstream.
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

		// The tombstone answers 404 in the upstream's own shape, from the
		// proxy (X-Cache: HIT), never the old body and never asking upstream.
		const gets = up.count('GET');
		for (let i = 0; i < 2; i++) {
			const g = await h.request(px.url + p);
			const j = h.assertOpenAIError(g, 404, `GET #${i + 1} after DELETE`);
			assert.equal(j.error.message, `Response with id '${id}' not found.`);
			assert.equal(j.error.type, 'invalid_request_error');
			assert.equal(j.error.code, null);
			h.assertXCache(g, 'HIT', 'the tombstone');
			assert.equal(g.headers.etag, undefined, 'a tombstone has no ETag');
		}
		for (const q of ['?limit=2', '']) {
			const g = await h.request(px.url + pi + q);
			assert.equal(g.status, 404, `input_items${q} after DELETE: ${g.status} ${g.body.slice(0, 200)}`);
		}
		assert.equal(up.count('GET'), gets, 'no GET after the DELETE reached the upstream');
	});
});

test('a tombstone expires after tombstone_ttl, and tombstone_ttl = 0 turns them off', async () => {
	await h.withStack({ proxy: { config: '[cache]\ntombstone_ttl = 0\n' } }, async ({ up, px }) => {
		const id = up.seed();
		const p = `/v1/responses/${id}`;
		assert.equal((await h.request(px.url + p, { method: 'DELETE' })).status, 200);
		const g = await h.request(px.url + p);
		h.assertOpenAIError(g, 404, 'GET after DELETE, no tombstones');
		h.assertXCache(g, 'MISS', 'no tombstone: the upstream answered');
		assert.equal(up.count('GET', p), 1);
	});
	await h.withStack({ proxy: { config: '[cache]\ntombstone_ttl = 1\n' } }, async ({ up, px }) => {
		const id = up.seed();
		const p = `/v1/responses/${id}`;
		assert.equal((await h.request(px.url + p, { method: 'DELETE' })).status, 200);
		h.assertXCache(await h.request(px.url + p), 'HIT', 'tombstone while fresh');
		assert.equal(up.count('GET', p), 0);
		// Bounded wait for the one-second tombstone to age out.
		await h.until(async () => (await h.request(px.url + p)).headers['x-cache'] === 'MISS',
			{ timeoutMs: 5000, stepMs: 100, what: 'the tombstone to expire' });
		assert.ok(up.count('GET', p) >= 1, 'after expiry the upstream is asked again');
	});
});

test('a GET that was in flight when the DELETE came does not bring the entry back', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const id = up.seed();
		const p = `/v1/responses/${id}`;
		// The GET reaches the upstream and is held there; the DELETE passes it.
		up.hang = true;
		const slow = h.request(px.url + p);
		await h.until(() => up.count('GET', p) === 1, { what: 'the GET to reach the upstream' });
		up.hang = false;
		const body = JSON.stringify(up.responseObject(up.get(id)));
		const held = [...up.hung][0];
		assert.equal((await h.request(px.url + p, { method: 'DELETE' })).status, 200);
		held.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
		held.end(body);
		assert.equal((await slow).status, 200, 'the GET that started first gets its answer');
		const g = await h.request(px.url + p);
		h.assertOpenAIError(g, 404, 'GET after the DELETE');
		assert.equal(up.count('GET', p), 1, 'answered by the tombstone, not a stale entry');
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
